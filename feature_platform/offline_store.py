"""The offline store: each feature view's history of value changes, one Parquet file per hour.

``features/<view>/<YYYY-MM-DDTHH>.parquet`` holds the rows whose ``valid_from`` falls in
that hour (the first partition also holds everything before it). Each file records, in its
Parquet metadata, the instant its values are known up to (``as_of``: the hour's end, or
earlier for the current hour) and the view's code version.

The *horizon* of a view is how far its history is known without a gap: the ``as_of`` of
the last partition in the unbroken run that starts at the first partition. Readers never
trust a value past it (docs/semantics.md, rule 6).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pyarrow as pa

from feature_platform.cdc.change_log import hour_label, parse_hour
from feature_platform.feature_view import FeatureView
from feature_platform.storage import Store

METADATA_KEY = b"feature_platform"


class OfflineFeatureStore:
    def __init__(self, store: Store):
        self.store = store

    def prefix(self, view: FeatureView | str) -> str:
        name = view if isinstance(view, str) else view.name
        return f"features/{name}"

    def partition_path(self, view: FeatureView | str, hour: datetime) -> str:
        return f"{self.prefix(view)}/{hour_label(hour)}.parquet"

    def write_partition(self, view: FeatureView, hour: datetime, rows: pa.Table, as_of: datetime) -> str:
        metadata = {"as_of": as_of.astimezone(timezone.utc).isoformat(), "code_version": view.code_version(),
                    "hour": hour_label(hour)}
        schema = rows.schema.with_metadata({METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()})
        path = self.partition_path(view, hour)
        self.store.write_table(path, rows.cast(schema))
        return path

    def partition_hours(self, view: FeatureView | str) -> list[datetime]:
        hours = []
        for entry in self.store.list_files(self.prefix(view), recursive=False):
            name = entry.path.rsplit("/", 1)[-1]
            if name.endswith(".parquet"):
                hours.append(parse_hour(name[: -len(".parquet")]))
        return sorted(hours)

    def partition_metadata(self, view: FeatureView | str, hour: datetime) -> dict:
        schema = self.store.read_parquet_schema(self.partition_path(view, hour))
        return json.loads((schema.metadata or {}).get(METADATA_KEY, b"{}"))

    def known_partitions(self, view: FeatureView | str, first_partition: datetime) -> list[datetime]:
        """The unbroken run of materialized hours starting at the first partition."""
        run: list[datetime] = []
        expected = first_partition
        for hour in self.partition_hours(view):
            if hour < expected:
                continue
            if hour != expected:
                break
            run.append(hour)
            expected = hour + timedelta(hours=1)
        return run

    def horizon(self, view: FeatureView | str, first_partition: datetime,
                known: list[datetime] | None = None) -> datetime | None:
        """How far the view's history is known without a gap (None: not at all yet).
        ``known``: the view's ``known_partitions``, if the caller has just listed them."""
        run = self.known_partitions(view, first_partition) if known is None else known
        if not run:
            return None
        as_of = self.partition_metadata(view, run[-1]).get("as_of")
        return datetime.fromisoformat(as_of) if as_of else run[-1] + timedelta(hours=1)

    def history_files(self, view: FeatureView | str, first_partition: datetime) -> list[str]:
        """URIs of the known partitions (local paths, or ``s3://``), for ``storage.parquet_source``."""
        return [self.store.uri_of(self.partition_path(view, hour))
                for hour in self.known_partitions(view, first_partition)]

    def read_history(self, view: FeatureView, first_partition: datetime) -> pa.Table:
        tables = [self.store.read_table(self.partition_path(view, hour))
                  for hour in self.known_partitions(view, first_partition)]
        schema = view.history_schema()
        if not tables:
            return schema.empty_table()
        return pa.concat_tables([t.cast(schema) for t in tables])
