"""Dagster resources for the two stores the CDC side touches: the landing zone and the offline store."""


import dagster as dg

from feature_platform.storage import Store


class LandingZoneResource(dg.ConfigurableResource):
    """Where Debezium batches land: a folder, or ``s3://bucket/prefix``."""

    uri: str

    def store(self) -> Store:
        return Store(self.uri)


class OfflineStoreResource(dg.ConfigurableResource):
    """Parquet history; every path lives under ``<uri>/<project>``."""

    uri: str
    project: str

    def store(self) -> Store:
        return Store(f"{self.uri.rstrip('/')}/{self.project}")
