"""Sensors and schedules of this deployment."""
