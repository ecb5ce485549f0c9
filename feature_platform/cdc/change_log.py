"""Change logs: every decoded row change of a source table, by the hour it was committed.

Two steps, both idempotent:

1. **Staging** decodes each landing file exactly once, into one Parquet fragment per
   commit hour it touches (``_staging/<table>/<hour>/<file-id>.parquet``), its bad lines
   into quarantine (``_quarantine/<table>/<hour>/<file-id>.parquet``) and a small manifest
   (``_staging/<table>/_manifest/<file-id>.json``) with the hours and an account of every
   line. Files are immutable, so a file already in the manifest is never read again.
2. **Building** a partition reads that hour's fragments from every file, drops duplicates
   (same table, primary key, lsn and op: a re-delivered record), orders by lsn and
   writes ``change_logs/<table>/<hour>.parquet`` atomically.

The result depends only on the set of landed files, never on the order they arrived in.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import duckdb
import pyarrow as pa

from feature_platform.cdc.decoder import RowChange, Skipped, Tombstone
from feature_platform.cdc.landing import LandingFile, LineOutcome, list_landing_files, read_landing_file
from feature_platform.sources import SourceTable
from feature_platform.storage import Store

HOUR_FORMAT = "%Y-%m-%dT%H"
OP_ORDER = {"d": 0, "t": 1, "r": 2, "c": 3, "u": 4}  # a primary-key change's d before its c
# Rows per Parquet row group of a change-log partition. Spark splits a file into tasks by
# bytes, but a task reads only the row groups whose middle falls in its split: a file of one
# row group is read by one task however large it is. 64Ki rows (~2 MB of an orders log) let
# a local[2] session read a 1M-change log with two tasks; pyarrow reads it as fast.
ROW_GROUP_ROWS = 65_536
# Metadata columns whose values (nearly) never repeat: written without a dictionary, which
# in row groups this small is tried anew in each and only makes them bigger (+27% for the
# 1M-change orders log) and slower to read.
NEAR_UNIQUE = ("_lsn", "_commit_time", "_tx_id", "_pk", "_source_line")


def parquet_options(schema: pa.Schema) -> dict:
    """How change-log partitions are written (``pq.write_table`` keywords)."""
    leaves = [f"{f.name}.list.element" if pa.types.is_list(f.type) else f.name for f in schema]
    return {"row_group_size": ROW_GROUP_ROWS, "use_dictionary": [name for name in leaves if name not in NEAR_UNIQUE]}

METADATA_FIELDS = [
    pa.field("_op", pa.string(), nullable=False),
    pa.field("_lsn", pa.int64(), nullable=False),
    pa.field("_commit_time", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("_tx_id", pa.int64()),
    pa.field("_snapshot", pa.bool_(), nullable=False),
    pa.field("_unavailable", pa.list_(pa.string())),  # TOASTed columns: keep the previous value
    pa.field("_pk", pa.string()),  # canonical JSON of the primary key; null for a truncate
    pa.field("_source_file", pa.string(), nullable=False),
    pa.field("_source_line", pa.int64(), nullable=False),
]

QUARANTINE_SCHEMA = pa.schema([
    pa.field("table", pa.string()),
    pa.field("file", pa.string()),
    pa.field("line", pa.int64()),
    pa.field("reason", pa.string()),
    pa.field("raw", pa.string()),
])


def change_log_schema(table: SourceTable) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.arrow_type) for c in table.columns] + METADATA_FIELDS)


def hour_label(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime(HOUR_FORMAT)


def hour_of_ms(commit_ms: int) -> str:
    return datetime.fromtimestamp(commit_ms / 1000, tz=timezone.utc).strftime(HOUR_FORMAT)


def parse_hour(label: str) -> datetime:
    """The hour a label (``2026-03-01T05``) names. Listing a view's partitions parses one
    label per file: ``fromisoformat`` is ~40× faster than ``strptime``, and the shape check
    keeps it as strict (no minutes, no dates alone)."""
    if len(label) != 13 or label[10] != "T" or not label[11:].isdigit():
        raise ValueError(f"{label!r} is not an hour label like 2026-03-01T05")
    return datetime.fromisoformat(label).replace(tzinfo=timezone.utc)


def file_id(path: str) -> str:
    """A stable, readable name for a landing file inside the offline store."""
    digest = hashlib.sha1(path.encode("utf-8")).hexdigest()[:16]
    base = posixpath.basename(path).replace("+", "_")[:80]
    return f"{digest}-{base}"


def canonical_key(key: tuple | None) -> str | None:
    return None if key is None else json.dumps([str(v) if not isinstance(v, (int, str)) else v for v in key],
                                               separators=(",", ":"))


@dataclass
class LineAccount:
    """Where every line of a landing file went: nothing is dropped without being counted."""

    lines: int = 0
    changes: int = 0
    tombstones: int = 0
    skipped: int = 0
    quarantined: int = 0

    def add(self, other: "LineAccount") -> None:
        for name in ("lines", "changes", "tombstones", "skipped", "quarantined"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class BatchAccount:
    """What became of one batch's records in the partitions built: every record is one of these."""

    records_in: int = 0
    change_log_rows: int = 0
    duplicates_dropped: int = 0  # same (primary key, lsn, op) already delivered: a re-delivery
    quarantined: int = 0

    def add(self, other: "BatchAccount") -> None:
        for name in ("records_in", "change_log_rows", "duplicates_dropped", "quarantined"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def balanced(self) -> bool:
        return self.records_in == self.change_log_rows + self.duplicates_dropped + self.quarantined


@dataclass
class StagedFile:
    path: str
    file_id: str
    hours: list[str]
    account: LineAccount
    quarantine_reasons: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({
            "path": self.path, "file_id": self.file_id, "hours": self.hours,
            "account": self.account.__dict__, "quarantine_reasons": self.quarantine_reasons[:20],
        }, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "StagedFile":
        data = json.loads(text)
        return cls(data["path"], data["file_id"], data["hours"], LineAccount(**data["account"]),
                   data.get("quarantine_reasons", []))


def _printable(raw: str) -> str:
    return raw.encode("utf-8", "backslashreplace").decode("utf-8")[:100_000]


def _changes_to_table(table: SourceTable, path: str, rows: list[tuple[int, RowChange]]) -> pa.Table:
    schema = change_log_schema(table)
    columns: dict[str, list] = {name: [] for name in schema.names}
    for line, change in rows:
        for column in table.columns:
            columns[column.name].append(change.values.get(column.name))
        columns["_op"].append(change.op)
        columns["_lsn"].append(change.lsn)
        columns["_commit_time"].append(change.commit_ms * 1000)
        columns["_tx_id"].append(change.tx_id)
        columns["_snapshot"].append(change.snapshot)
        columns["_unavailable"].append(list(change.unavailable) or None)
        columns["_pk"].append(canonical_key(change.key))
        columns["_source_file"].append(path)
        columns["_source_line"].append(line)
    arrays = [pa.array(columns[f.name], type=f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


class ChangeLog:
    """The staged and built change log of one source table inside the offline store."""

    def __init__(self, offline: Store, table: SourceTable):
        self.offline = offline
        self.table = table
        self.staging_prefix = f"_staging/{table.name}"
        self.quarantine_prefix = f"_quarantine/{table.name}"
        self.partition_prefix = f"change_logs/{table.name}"

    # -- staging -----------------------------------------------------------------------

    def manifest_path(self, landing_path: str) -> str:
        return f"{self.staging_prefix}/_manifest/{file_id(landing_path)}.json"

    def staged_ids(self) -> set[str]:
        entries = self.offline.list_files(f"{self.staging_prefix}/_manifest", recursive=False)
        return {posixpath.basename(e.path)[: -len(".json")] for e in entries if e.path.endswith(".json")}

    def read_manifest(self, landing_path: str) -> StagedFile | None:
        path = self.manifest_path(landing_path)
        if not self.offline.exists(path):
            return None
        return StagedFile.from_json(self.offline.read_bytes(path).decode())

    def stage_file(self, landing: Store, landing_file: LandingFile) -> StagedFile:
        """Decode one landing file into hourly fragments; idempotent."""
        existing = self.read_manifest(landing_file.path)
        if existing is not None:
            return existing
        outcomes = read_landing_file(landing, landing_file, self.table)
        return self._stage_outcomes(landing_file, outcomes)

    def _stage_outcomes(self, landing_file: LandingFile, outcomes: list[LineOutcome]) -> StagedFile:
        fid = file_id(landing_file.path)
        account = LineAccount()
        by_hour: dict[str, list[tuple[int, RowChange]]] = {}
        bad_by_hour: dict[str, list[LineOutcome]] = {}
        landed_hour = hour_of_ms(landing_file.mtime_ns // 1_000_000)
        for outcome in outcomes:
            account.lines += 1
            decoded = outcome.decoded
            if isinstance(decoded, RowChange):
                account.changes += 1
                by_hour.setdefault(hour_of_ms(decoded.commit_ms), []).append((outcome.line, decoded))
            elif isinstance(decoded, Tombstone):
                account.tombstones += 1
            elif isinstance(decoded, Skipped):
                account.skipped += 1
            else:
                account.quarantined += 1
                # A bad line belongs to the hour it was committed in when that can be read,
                # else to the hour its file landed: either way some partition reports it.
                hour = hour_of_ms(outcome.commit_ms_hint) if outcome.commit_ms_hint else landed_hour
                bad_by_hour.setdefault(hour, []).append(outcome)
        for hour, rows in by_hour.items():
            fragment = _changes_to_table(self.table, landing_file.path, rows)
            self.offline.write_table(f"{self.staging_prefix}/{hour}/{fid}.parquet", fragment)
        reasons = []
        for hour, bad in bad_by_hour.items():
            quarantine = pa.Table.from_pydict({
                "table": [self.table.name] * len(bad),
                "file": [landing_file.path] * len(bad),
                "line": [o.line for o in bad],
                "reason": [o.reason for o in bad],
                "raw": [_printable(o.raw) for o in bad],
            }, schema=QUARANTINE_SCHEMA)
            self.offline.write_table(f"{self.quarantine_prefix}/{hour}/{fid}.parquet", quarantine)
            reasons.extend(f"{landing_file.path}:{o.line}: {o.reason}" for o in bad)
        staged = StagedFile(landing_file.path, fid, sorted(set(by_hour) | set(bad_by_hour)), account, reasons)
        # The manifest is written last: a file is "staged" only once all its fragments exist.
        self.offline.write_bytes(self.manifest_path(landing_file.path), staged.to_json().encode())
        return staged

    def pending_files(self, landing: Store) -> list[LandingFile]:
        files, _ = list_landing_files(landing, [self.table.topic])
        staged = self.staged_ids()
        return [f for f in files if file_id(f.path) not in staged]

    def stage_pending(self, landing: Store) -> list[StagedFile]:
        """Stage every landed file of this table's topic that is not staged yet."""
        return [self.stage_file(landing, f) for f in self.pending_files(landing)]

    # -- building partitions -------------------------------------------------------------

    def staged_hours(self) -> list[str]:
        # Hours with change fragments *or* quarantined lines: a bad line filed under an hour in
        # which nothing was committed (e.g. its file's landing hour) was otherwise never read by
        # any partition, and the no_quarantined_records check passed over it.
        hours = set(self.offline.list_dirs(self.staging_prefix)) | set(self.offline.list_dirs(self.quarantine_prefix))
        return sorted(d for d in hours if not d.startswith("_"))

    def _read_fragments(self, prefix: str, hours: list[str], schema: pa.Schema) -> pa.Table:
        tables = []
        for hour in hours:
            for entry in sorted(self.offline.list_files(f"{prefix}/{hour}", recursive=False), key=lambda e: e.path):
                tables.append(self.offline.read_table(entry.path))
        if not tables:
            return schema.empty_table()
        return pa.concat_tables([t.cast(schema) for t in tables])

    def hours_for(self, start: datetime, end: datetime, is_first_partition: bool) -> list[str]:
        """Staged hour folders that belong to the partition [start, end).

        The first partition also holds everything committed before it (the snapshot of a
        database captured long before the platform's first partition), so no change is
        left outside every partition.
        """
        low, high = hour_label(start), hour_label(end)
        if is_first_partition:
            return [h for h in self.staged_hours() if h < high]
        # Any other partition names its own hours: listing every staged hour on each build
        # would cost each hourly run more as the deployment ages (on S3, a LIST per 1,000 hours).
        hours, hour = [], parse_hour(low)
        while hour_label(hour) < high:
            hours.append(hour_label(hour))
            hour += timedelta(hours=1)
        return hours

    def build(self, start: datetime, end: datetime, is_first_partition: bool = False) -> "BuiltPartition":
        hours = self.hours_for(start, end, is_first_partition)
        schema = change_log_schema(self.table)
        fragments = self._read_fragments(self.staging_prefix, hours, schema)
        quarantined = self._read_fragments(self.quarantine_prefix, hours, QUARANTINE_SCHEMA)
        if fragments.num_rows == 0:  # most hours of a long backfill: skip the SQL engine
            return BuiltPartition(table=fragments, records_in=0, duplicates=0, quarantine=quarantined, source_files=[])
        changes_by_file = _count_by_file(fragments, "_source_file")
        connection = duckdb.connect()
        connection.register("fragments", fragments)
        op_rank = " ".join(f"WHEN '{op}' THEN {rank}" for op, rank in OP_ORDER.items())
        deduplicated = connection.sql(f"""
            SELECT * EXCLUDE (_copy) FROM (
                SELECT *, row_number() OVER (
                    PARTITION BY _pk, _lsn, _op ORDER BY _source_file, _source_line) AS _copy
                FROM fragments)
            WHERE _copy = 1
            ORDER BY _lsn, CASE _op {op_rank} END, _pk, _source_file, _source_line
        """).to_arrow_table().cast(schema)
        connection.close()
        return BuiltPartition(
            table=deduplicated,
            records_in=fragments.num_rows,
            duplicates=fragments.num_rows - deduplicated.num_rows,
            quarantine=quarantined,
            source_files=sorted(changes_by_file),
            changes_by_file=changes_by_file,
        )

    def partition_path(self, start: datetime) -> str:
        return f"{self.partition_prefix}/{hour_label(start)}.parquet"

    def write(self, start: datetime, built: "BuiltPartition") -> str:
        path = self.partition_path(start)
        self.offline.write_table(path, built.table, **parquet_options(built.table.schema))
        return path

    def read_partitions(self, start: datetime, end: datetime) -> pa.Table:
        """The change log between two hours, as written (missing partitions read as empty)."""
        tables = []
        moment = start
        while moment < end:
            path = self.partition_path(moment)
            if self.offline.exists(path):
                tables.append(self.offline.read_table(path))
            moment += timedelta(hours=1)
        schema = change_log_schema(self.table)
        return pa.concat_tables([t.cast(schema) for t in tables]) if tables else schema.empty_table()


def _count_by_file(table: pa.Table, column: str) -> dict[str, int]:
    if table.num_rows == 0:
        return {}
    counts = table.group_by(column).aggregate([([], "count_all")])
    return dict(zip(counts.column(column).to_pylist(), counts.column("count_all").to_pylist()))


@dataclass
class BuiltPartition:
    table: pa.Table
    records_in: int  # decoded change records read (before de-duplication); quarantined ones apart
    duplicates: int
    quarantine: pa.Table
    source_files: list[str]
    changes_by_file: dict[str, int] = field(default_factory=dict)  # decoded records per landing file

    def account_by_file(self) -> dict[str, "BatchAccount"]:
        """Per landing file (batch): records in = change-log rows + duplicates dropped + quarantined."""
        kept = _count_by_file(self.table, "_source_file")
        quarantined = _count_by_file(self.quarantine, "file")
        accounts = {}
        for path in sorted(set(self.changes_by_file) | set(quarantined)):
            changes, rows, bad = self.changes_by_file.get(path, 0), kept.get(path, 0), quarantined.get(path, 0)
            accounts[path] = BatchAccount(records_in=changes + bad, change_log_rows=rows,
                                          duplicates_dropped=changes - rows, quarantined=bad)
        return accounts

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self.table.column("_op").to_pylist():
            counts[op] = counts.get(op, 0) + 1
        return counts
