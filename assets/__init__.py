"""This deployment's assets: the captured tables' change logs (and, built on them, feature views)."""
