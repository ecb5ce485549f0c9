"""Change logs: staging landing files into hourly fragments, and building hour partitions.

The property test generates a small random history of ``orders`` (a snapshot sharing one lsn,
inserts, updates, deletes with full or PK-only before images, primary-key changes as d + c
sharing an lsn, the odd truncate), lands it as Debezium lines in several files (schema-wrapped
or bare; precise, string or double Decimals; .json or .json.gz; with or without .keys.json
siblings; null tombstone lines; transaction markers; a tombstone/ folder; bad lines),
re-delivers some records in other files with a different envelope ts_ms, and lands some files
twice under another name. Then:

(a) staging the files in any order gives byte-identical partitions to staging them sorted into
    a fresh offline store;
(b) the change log equals a brute-force oracle: one row per (pk, lsn, op), in lsn order, with
    typed values, taken from the first (file, line) that carried it;
(c) staging some files, building, then staging the rest and rebuilding equals building once;
(d) re-materializing writes byte-identical Parquet;
(e) every line of every file is accounted for, and distinct rows + duplicates dropped = changes staged;
and every bad line is in the quarantine of the partition of its commit (or landing) hour.

Example tests cover bad lines in the middle of a file through ``dagster.materialize`` with the
real resources (the ``no_quarantined_records`` check), first-partition clamping, temporary
names, and symlinks out of the landing root.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pytest
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assets.sources import customers, orders
from conftest import (
    CAPTURED,
    ENCODINGS,
    EPOCH,
    HOUR_MS,
    ORDERS_DIR,
    UTC,
    current_hour,
    dumps,
    keys_name,
    landing_name,
    make_stores,
    ms,
    order_key,
    order_message,
    order_row,
    transaction_marker,
    write_landing_file,
    write_text,
)
from feature_platform.cdc.change_log import OP_ORDER, ChangeLog, hour_label, hour_of_ms, parse_hour
from feature_platform.cdc.landing import list_landing_files
from feature_platform.orchestration.change_log_assets import QUARANTINE_CHECK, build_change_log_asset
from feature_platform.orchestration.partitions import hourly_partitions, partition_key_of
from feature_platform.storage import Store

P0 = datetime(2024, 3, 1, 0, tzinfo=UTC)  # the first partition of the property tests
P0_MS = ms(P0)
HOUR = timedelta(hours=1)

# -- a random history of orders --------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    op: str
    pk: int | None
    lsn: int
    commit_ms: int
    tx_id: int
    snapshot: object  # source.snapshot as Debezium writes it
    image: dict | None  # after image (r, c, u); before image (d): whole row or primary key only


prices = st.one_of(
    st.none(),
    st.sampled_from([Decimal("12.99"), Decimal("11.75"), Decimal("1.28"), Decimal("0.10"), Decimal("-0.01")]),
    st.integers(-(10**10 - 1), 10**10 - 1).map(lambda cents: Decimal(cents).scaleb(-2)),
)


def rows(pk: int):
    return st.builds(
        lambda day, purchaser, quantity, product, price: order_row(
            pk, day=day, purchaser=purchaser, quantity=quantity, product_id=product, unit_price=price),
        st.integers(0, 40_000), st.integers(1001, 1010), st.integers(-5, 1000), st.integers(101, 110), prices,
    )


@st.composite
def histories(draw) -> list[Change]:
    t = P0_MS + draw(st.integers(-2 * HOUR_MS, HOUR_MS))  # some commits before the first partition
    lsn = draw(st.integers(10**6, 10**12))
    tx = draw(st.integers(100, 10**6))
    state: dict[int, dict] = {}
    changes: list[Change] = []
    if draw(st.booleans()):  # an initial snapshot: every row shares one lsn and one txId
        pks = sorted(draw(st.sets(st.integers(1, 30), min_size=1, max_size=5)))
        for i, pk in enumerate(pks):
            row = draw(rows(pk))
            flag = "last" if i == len(pks) - 1 else draw(st.sampled_from(["first", "true", True]))
            changes.append(Change("r", pk, lsn, t, tx, flag, row))
            state[pk] = row
        lsn += draw(st.integers(1, 1000))
        tx += 1
    for _ in range(draw(st.integers(2, 9))):
        # commits spread over a few hours: several in one hour, some hours apart
        t += draw(st.sampled_from([0, 1, 7, 25, 50, 80, 150])) * 60_000 + draw(st.integers(0, 59_999))
        live = draw(st.sampled_from(["false", False, None]))
        for _ in range(draw(st.integers(1, 3))):
            lsn += draw(st.integers(1, 400))
            actions = ["insert"] + (["update", "update", "delete", "pk_change"] if state else [])
            action = "truncate" if draw(st.integers(0, 59)) == 0 else draw(st.sampled_from(actions))
            if action == "insert":
                pk = draw(st.integers(1, 60).filter(lambda p: p not in state))
                state[pk] = draw(rows(pk))
                changes.append(Change("c", pk, lsn, t, tx, live, state[pk]))
            elif action == "update":
                pk = draw(st.sampled_from(sorted(state)))
                state[pk] = draw(rows(pk))
                changes.append(Change("u", pk, lsn, t, tx, live, state[pk]))
            elif action == "delete":
                pk = draw(st.sampled_from(sorted(state)))
                row = state.pop(pk)
                replica_identity_full = draw(st.booleans())  # else DEFAULT: the before image is the key
                changes.append(Change("d", pk, lsn, t, tx, live, row if replica_identity_full else {"id": pk}))
            elif action == "pk_change":  # d(old key) + c(new key), one lsn and txId (ENVELOPE-NOTES #8)
                old = draw(st.sampled_from(sorted(state)))
                new = draw(st.integers(61, 99).filter(lambda p: p not in state))
                row = state.pop(old)
                changes.append(Change("d", old, lsn, t, tx, live, row))
                state[new] = {**row, "id": new}
                changes.append(Change("c", new, lsn, t, tx, live, state[new]))
            else:
                state.clear()
                changes.append(Change("t", None, lsn, t, tx, live, None))
        tx += draw(st.integers(1, 3))
    return changes


# -- landing the history as files --------------------------------------------------------------

BAD_KINDS = {
    # kind: (reason the quarantine must give, whether the line carries a readable commit time)
    "not-json": (r"^not valid JSON", False),
    "unknown-op": (r"^field 'op': unknown op 'x'", True),
    "bad-decimal": (r"^field 'after\.unit_price'", True),
    "missing-source": (r"^field 'source': missing", False),
}


@dataclass
class FileSpec:
    encoding: str
    gz: bool
    keys: bool
    null_tombstones: bool
    markers: bool
    bad: list[tuple[str, int, int]]  # (kind, position, commit ms)
    partition: int
    mtime_ms: int


@dataclass
class Plan:
    changes: list[Change]
    files: list[FileSpec]
    placement: list[tuple[int, int, int]]  # (change index, file index, envelope delay ms); copies too
    copies: list[tuple[int, int]]  # (file index copied, mtime shift ms): the same content under another name
    tombstone_folder: bool


@st.composite
def plans(draw) -> Plan:
    changes = draw(histories())
    n_files = draw(st.integers(1, 4))
    last_ms = max([c.commit_ms for c in changes] + [P0_MS])
    files = []
    for index in range(n_files):
        bad = draw(st.lists(
            st.tuples(st.sampled_from(sorted(BAD_KINDS)), st.integers(0, 50), st.integers(P0_MS - HOUR_MS, last_ms)),
            max_size=2))
        files.append(FileSpec(
            encoding=draw(st.sampled_from(ENCODINGS)), gz=draw(st.booleans()), keys=draw(st.booleans()),
            null_tombstones=draw(st.booleans()), markers=draw(st.booleans()), bad=bad,
            partition=draw(st.integers(0, 2)), mtime_ms=draw(st.integers(P0_MS - HOUR_MS, last_ms + HOUR_MS)),
        ))
    placement = []
    for index in range(len(changes)):
        placement.append((index, draw(st.integers(0, n_files - 1)), draw(st.integers(1, 5000))))
        if draw(st.integers(0, 3)) == 0:  # re-delivered after a connector restart: new envelope ts_ms
            placement.append((index, draw(st.integers(0, n_files - 1)), draw(st.integers(60_000, 10**7))))
    copies = draw(st.lists(st.tuples(st.integers(0, n_files - 1), st.integers(0, 2 * HOUR_MS)), max_size=2))
    return Plan(changes, files, placement, copies, draw(st.booleans()))


@dataclass
class Landed:
    """What was written where: the expectations of every file and line."""

    lines: dict[str, list[tuple[str, object]]] = field(default_factory=dict)  # path -> [(kind, detail)]
    texts: dict[str, list[str]] = field(default_factory=dict)
    mtimes: dict[str, int] = field(default_factory=dict)

    def change_copies(self) -> dict[int, list[tuple[str, int]]]:
        """Change index -> every (path, line) that carries it."""
        copies: dict[int, list[tuple[str, int]]] = {}
        for path, lines in self.lines.items():
            for number, (kind, detail) in enumerate(lines, start=1):
                if kind == "change":
                    copies.setdefault(detail, []).append((path, number))
        return copies


def _bad_line(kind: str, commit_ms: int, encoding: str) -> str:
    row = order_row(999)
    if kind == "not-json":
        return '{"before":null,"after":{"id":999,"order_date":'
    if kind == "unknown-op":
        return dumps(order_message("x", lsn=5, commit_ms=commit_ms, tx_id=1, after=row, encoding=encoding))
    message = order_message("c", lsn=5, commit_ms=commit_ms, tx_id=1, after=row, encoding=encoding)
    payload = message["payload"] if "payload" in message else message
    if kind == "bad-decimal":
        payload["after"]["unit_price"] = "%%%"
    else:
        del payload["source"]
    return dumps(message)


def land(plan: Plan, root: Path) -> Landed:
    landed = Landed()
    by_file: dict[int, list[tuple[int, int]]] = {}
    for index, file_index, delay in plan.placement:
        by_file.setdefault(file_index, []).append((index, delay))
    paths = []
    for file_index, spec in enumerate(plan.files):
        wrapped = spec.encoding.startswith("schema")
        lines: list[tuple[str, object]] = []
        texts: list[str] = []
        keys: list[str] = []
        items = sorted(by_file.get(file_index, []))
        if spec.markers and items:
            first = plan.changes[items[0][0]]
            texts.append(dumps(transaction_marker("BEGIN", first.tx_id, first.lsn, first.commit_ms)))
            keys.append(dumps({"id": f"{first.tx_id}:{first.lsn}"}))
            lines.append(("skipped", None))
        for index, delay in items:
            change = plan.changes[index]
            image = change.image
            message = order_message(
                change.op, lsn=change.lsn, commit_ms=change.commit_ms, tx_id=change.tx_id,
                after=image if change.op in ("r", "c", "u") else None,
                before=image if change.op == "d" else None,
                snapshot=change.snapshot, ts_ms=change.commit_ms + delay, encoding=spec.encoding)
            texts.append(dumps(message))
            keys.append(dumps(order_key(change.pk, wrapped)))
            lines.append(("change", index))
            if change.op == "d" and spec.null_tombstones:
                texts.append("null")
                keys.append(dumps(order_key(change.pk, wrapped)))
                lines.append(("tombstone", None))
        if spec.markers and items:
            last = plan.changes[items[-1][0]]
            texts.append(dumps(transaction_marker("END", last.tx_id, last.lsn, last.commit_ms)))
            keys.append(dumps({"id": f"{last.tx_id}:{last.lsn}"}))
            lines.append(("skipped", None))
        for kind, position, commit_ms in spec.bad:
            position = min(position, len(texts))
            texts.insert(position, _bad_line(kind, commit_ms, spec.encoding))
            keys.insert(position, dumps(order_key(999, wrapped)))
            lines.insert(position, ("bad", (kind, commit_ms)))
        if not texts:
            texts, keys, lines = ["null"], ["null"], [("tombstone", None)]
        path = landing_name(spec.partition, file_index * 1000, spec.gz)
        mtime = EPOCH + timedelta(milliseconds=spec.mtime_ms)
        write_landing_file(root, path, texts, keys if spec.keys else None, mtime)
        landed.lines[path], landed.texts[path], landed.mtimes[path] = lines, texts, spec.mtime_ms
        paths.append(path)
    for number, (file_index, shift) in enumerate(plan.copies):  # the same object landed twice
        source = paths[file_index]
        copy = landing_name(7 + number, 500 + number, source.endswith(".gz"))
        mtime_ms = landed.mtimes[source] + shift
        for src, dst in ((source, copy), (keys_name(source), keys_name(copy))):
            if (root / src).exists():
                (root / dst).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(root / src, root / dst)
                os.utime(root / dst, (mtime_ms / 1000, mtime_ms / 1000))
        landed.lines[copy], landed.texts[copy], landed.mtimes[copy] = (
            landed.lines[source], landed.texts[source], mtime_ms)
    if plan.tombstone_folder:  # behavior.on.null.values=write: key-only tombstones in their own folder
        deletes = [c for c in plan.changes if c.op == "d"] or plan.changes[:1]
        path = f"{ORDERS_DIR}/tombstone/{orders.topic}+0+0000000000.keys.json"
        texts = [dumps(order_key(c.pk, False)) for c in deletes]
        write_landing_file(root, path, texts, None, P0 + HOUR)
        landed.lines[path] = [("tombstone", None)] * len(texts)
        landed.texts[path], landed.mtimes[path] = texts, ms(P0 + HOUR)
    return landed


# -- the oracle ------------------------------------------------------------------------------

COLUMNS = [c.name for c in orders.columns]


def oracle(plan: Plan, landed: Landed) -> list[dict]:
    copies = landed.change_copies()
    rows = []
    for index, change in enumerate(plan.changes):
        if index not in copies:
            continue  # never landed
        source_file, source_line = min(copies[index])  # the copy the build keeps
        image = change.image or {}
        values = {name: image.get(name) for name in COLUMNS}
        if isinstance(values["order_date"], int):
            values["order_date"] = EPOCH + timedelta(days=values["order_date"])
        rows.append({
            **values,
            "_op": change.op, "_lsn": change.lsn,
            "_commit_time": EPOCH + timedelta(milliseconds=change.commit_ms),
            "_tx_id": change.tx_id,
            "_snapshot": change.snapshot not in ("false", False, None),
            "_unavailable": None,
            "_pk": None if change.pk is None else f"[{change.pk}]",
            "_source_file": source_file, "_source_line": source_line,
        })
    rows.sort(key=lambda r: (r["_lsn"], OP_ORDER[r["_op"]], r["_pk"] or ""))
    return rows


def expected_quarantine(landed: Landed) -> dict[tuple[str, int], tuple[str, str, datetime]]:
    """(file, line) -> (reason pattern, raw text, partition it must be reported in)."""
    expected = {}
    for path, lines in landed.lines.items():
        for number, (kind, detail) in enumerate(lines, start=1):
            if kind != "bad":
                continue
            bad_kind, commit_ms = detail
            pattern, has_commit_time = BAD_KINDS[bad_kind]
            hour = parse_hour(hour_of_ms(commit_ms if has_commit_time else landed.mtimes[path]))
            expected[(path, number)] = (pattern, landed.texts[path][number - 1], max(hour, P0))
    return expected


# -- staging and building ----------------------------------------------------------------------

def landing_files(landing: Store):
    files, _ = list_landing_files(landing, [orders.topic])
    return {f.path: f for f in files}


def stage(landing: Store, offline: Store, paths: list[str]):
    files = landing_files(landing)
    log = ChangeLog(offline, orders)
    return [log.stage_file(landing, files[path]) for path in paths]


def build_all(offline: Store, hours: list[datetime]):
    """Build and write every partition; return (bytes by partition, BuiltPartition by hour)."""
    log = ChangeLog(offline, orders)
    built = {}
    for hour in hours:
        built[hour] = log.build(hour, hour + HOUR, is_first_partition=hour == P0)
        log.write(hour, built[hour])
    data = {hour: offline.read_bytes(log.partition_path(hour)) for hour in hours}
    return data, built


def partition_hours(plan: Plan, landed: Landed) -> list[datetime]:
    moments = [c.commit_ms for c in plan.changes] + list(landed.mtimes.values())
    moments += [commit for spec in plan.files for _, _, commit in spec.bad]
    last = max(parse_hour(hour_of_ms(max(moments))), P0)
    hours, hour = [], P0
    while hour <= last:
        hours.append(hour)
        hour += HOUR
    return hours


def concatenated(offline: Store, hours: list[datetime]) -> list[dict]:
    return ChangeLog(offline, orders).read_partitions(hours[0], hours[-1] + HOUR).to_pylist()


def copy_landing(src: Path, dst: Path, value_paths: list[str]) -> None:
    for path in value_paths:
        for relative in (path, keys_name(path) if not path.endswith(".keys.json") else None):
            if relative and (src / relative).exists():
                (dst / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src / relative, dst / relative)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(plan=plans(), data=st.data())
def test_change_log_is_a_function_of_the_landed_files(plan, data):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store_a, store_b, store_c = make_stores(tmp / "a"), make_stores(tmp / "b"), make_stores(tmp / "c")
        landed = land(plan, store_a.landing_dir)
        landing = store_a.landing
        all_paths = sorted(landing_files(landing))
        assert all_paths == sorted(landed.lines), "every landed file (and nothing else) is listed"
        hours = partition_hours(plan, landed)

        # (a) arrival order does not matter: a random permutation vs. sorted into a fresh store
        permutation = data.draw(st.permutations(all_paths), label="arrival order")
        staged = stage(landing, store_a.offline, permutation)
        stage(landing, store_b.offline, all_paths)
        bytes_a, built_a = build_all(store_a.offline, hours)
        bytes_b, _ = build_all(store_b.offline, hours)
        assert bytes_a == bytes_b

        # (b) the oracle: one row per (pk, lsn, op), lsn order, typed values, first copy kept
        change_log = concatenated(store_b.offline, hours)
        expected = oracle(plan, landed)
        assert change_log == expected
        lsns = [row["_lsn"] for row in change_log]
        assert lsns == sorted(lsns)
        assert len({(r["_pk"], r["_lsn"], r["_op"]) for r in change_log}) == len(change_log)

        # every bad line is reported, with its reason and raw text, by the right partition
        quarantined = {}
        for hour, built in built_a.items():
            for row in built.quarantine.to_pylist():
                assert (row["file"], row["line"]) not in quarantined
                quarantined[(row["file"], row["line"])] = (row, hour)
        wanted = expected_quarantine(landed)
        assert set(quarantined) == set(wanted)
        for where, (pattern, raw, hour) in wanted.items():
            row, reported_in = quarantined[where]
            assert re.match(pattern, row["reason"]), row["reason"]
            assert row["raw"] == raw and row["table"] == "orders"
            assert reported_in == hour

        # (c) incremental arrival: some files, build, the rest, rebuild == building once
        split = data.draw(st.integers(0, len(permutation)), label="files in the first batch")
        copy_landing(store_a.landing_dir, store_c.landing_dir, permutation[:split])
        ChangeLog(store_c.offline, orders).stage_pending(store_c.landing)
        build_all(store_c.offline, hours)
        copy_landing(store_a.landing_dir, store_c.landing_dir, permutation[split:])
        second = ChangeLog(store_c.offline, orders).stage_pending(store_c.landing)
        assert sorted(s.path for s in second) == sorted(permutation[split:])
        bytes_c, _ = build_all(store_c.offline, hours)
        assert bytes_c == bytes_b

        # (d) re-materializing (staging again is a no-op, building again) is byte-identical
        assert stage(landing, store_a.offline, all_paths) == staged_sorted(staged, all_paths)
        assert build_all(store_a.offline, hours)[0] == bytes_a

        # (e) accounting: every line of every file, and every staged change
        by_path = {s.path: s for s in staged}
        for path, lines in landed.lines.items():
            account = by_path[path].account
            kinds = [kind for kind, _ in lines]
            assert account.lines == len(lines) == account.changes + account.tombstones + account.skipped + account.quarantined
            assert (account.changes, account.tombstones, account.skipped, account.quarantined) == (
                kinds.count("change"), kinds.count("tombstone"), kinds.count("skipped"), kinds.count("bad"))
        total_changes = sum(s.account.changes for s in staged)
        assert sum(b.table.num_rows for b in built_a.values()) + sum(b.duplicates for b in built_a.values()) == total_changes
        assert sum(b.table.num_rows for b in built_a.values()) == len(expected)


def staged_sorted(staged, paths):
    by_path = {s.path: s for s in staged}
    return [by_path[p] for p in paths]


# -- bad lines, through the asset and its check ---------------------------------------------

def recent_start() -> datetime:
    return current_hour() - timedelta(hours=72)


def good_line(op: str, pk: int, lsn: int, commit: datetime, **row) -> str:
    image = order_row(pk, **row)
    return dumps(order_message(op, lsn=lsn, commit_ms=ms(commit), tx_id=lsn, after=None if op == "d" else image,
                               before=image if op == "d" else None))


def bad_lines(commit: datetime) -> dict[str, str]:
    good = order_message("c", lsn=77, commit_ms=ms(commit), tx_id=7, after=order_row(5))
    unknown_op = dict(good, payload={**good["payload"], "op": "z"})
    bad_decimal = order_message("c", lsn=78, commit_ms=ms(commit), tx_id=7, after=order_row(6))
    bad_decimal["payload"]["after"]["unit_price"] = "not-base64!"
    no_source = order_message("c", lsn=79, commit_ms=ms(commit), tx_id=7, after=order_row(7))
    del no_source["payload"]["source"]
    return {
        "not-json": '{"before": null, "after": {"id": 5, "order_date"',
        "unknown-op": dumps(unknown_op),
        "bad-decimal": dumps(bad_decimal),
        "missing-source": dumps(no_source),
    }


def materialize(asset, partition_key: str, stores, instance=None):
    return dg.materialize([asset], partition_key=partition_key, resources=stores.resources,
                          instance=instance or dg.DagsterInstance.ephemeral())


def read_partition(stores, hour: datetime) -> list[dict]:
    log = ChangeLog(stores.offline, orders)
    return pq.read_table(stores.offline.full_path(log.partition_path(hour))).to_pylist()


def test_bad_lines_in_the_middle_of_a_file_are_quarantined_and_the_rest_kept(stores):
    start = recent_start()
    hour = start + 5 * HOUR
    commit = hour + timedelta(minutes=12)
    bad = bad_lines(commit)
    lines = [
        good_line("c", 1, 100, commit),
        bad["not-json"],
        good_line("u", 1, 101, commit, quantity=9),
        bad["unknown-op"],
        bad["bad-decimal"],
        good_line("c", 2, 102, commit),
        bad["missing-source"],
        good_line("d", 2, 103, commit),
    ]
    path = landing_name(0, 0)
    # the file landed in the same hour, so lines without a commit time are reported there too
    write_landing_file(stores.landing_dir, path, lines, mtime=hour + timedelta(minutes=40))
    clean_hour = hour + HOUR
    write_landing_file(stores.landing_dir, landing_name(0, 100), [good_line("c", 3, 200, clean_hour)],
                       mtime=clean_hour + timedelta(minutes=5))

    asset = build_change_log_asset(orders, hourly_partitions(start))
    result = materialize(asset, partition_key_of(hour), stores)
    assert result.success
    [check] = result.get_asset_check_evaluations()
    assert (check.check_name, check.passed, check.severity) == (QUARANTINE_CHECK, False, dg.AssetCheckSeverity.WARN)
    assert check.metadata["quarantined_records"].value == 4
    examples = check.metadata["examples"].value
    assert f"{path}:2: not valid JSON" in examples and f"{path}:5: field 'after.unit_price'" in examples
    [materialization] = result.get_asset_materialization_events()
    assert materialization.materialization.metadata["dagster/row_count"].value == 4
    assert materialization.materialization.metadata["quarantined_records"].value == 4

    rows = read_partition(stores, hour)
    assert [(r["_op"], r["id"], r["_source_line"]) for r in rows] == [("c", 1, 1), ("u", 1, 3), ("c", 2, 6), ("d", 2, 8)]
    assert rows[1]["quantity"] == 9 and all(r["_source_file"] == path for r in rows)

    log = ChangeLog(stores.offline, orders)
    quarantine = log.build(hour, hour + HOUR).quarantine.to_pylist()
    assert [(q["file"], q["line"]) for q in quarantine] == [(path, 2), (path, 4), (path, 5), (path, 7)]
    reasons = {q["line"]: q["reason"] for q in quarantine}
    assert reasons[2].startswith("not valid JSON")
    assert reasons[4].startswith("field 'op': unknown op 'z'")
    assert reasons[5].startswith("field 'after.unit_price': 'not-base64!' is not base64")
    assert reasons[7].startswith("field 'source': missing")
    assert {q["line"]: q["raw"] for q in quarantine} == {2: lines[1], 4: lines[3], 5: lines[4], 7: lines[6]}
    manifest = log.read_manifest(path)
    assert (manifest.account.lines, manifest.account.changes, manifest.account.quarantined) == (8, 4, 4)

    # the next hour is clean: its check passes (the check is not failing by construction)
    clean = materialize(asset, partition_key_of(clean_hour), stores)
    [clean_check] = clean.get_asset_check_evaluations()
    assert clean_check.passed and clean_check.metadata["quarantined_records"].value == 0
    assert [r["id"] for r in read_partition(stores, clean_hour)] == [3]


def test_quarantine_in_an_hour_without_any_change_is_still_reported(stores):
    """A file of only bad lines, landed in an hour when nothing was committed.

    Its quarantine used to be written under that hour and never read: a partition only read
    the hours that had change fragments, so the check passed with records quarantined.
    """
    start = recent_start()
    commit_hour = start + 2 * HOUR
    landed_hour = start + 6 * HOUR
    write_landing_file(stores.landing_dir, landing_name(0, 0), [good_line("c", 1, 10, commit_hour)],
                       mtime=commit_hour + timedelta(minutes=1))
    path = landing_name(0, 50)
    write_landing_file(stores.landing_dir, path, ["{oops", "also not json"], mtime=landed_hour + timedelta(minutes=3))
    asset = build_change_log_asset(orders, hourly_partitions(start))
    result = materialize(asset, partition_key_of(landed_hour), stores)
    [check] = result.get_asset_check_evaluations()
    assert not check.passed and check.metadata["quarantined_records"].value == 2
    assert read_partition(stores, landed_hour) == []
    quarantine = ChangeLog(stores.offline, orders).build(landed_hour, landed_hour + HOUR).quarantine.to_pylist()
    assert [(q["file"], q["line"]) for q in quarantine] == [(path, 1), (path, 2)]


def test_lines_that_cannot_be_stored_are_quarantined_not_fatal(stores):
    """Each bad line here used to decode (or half-decode) and then crash staging of its whole
    file with OverflowError / ValueError / InvalidOperation / UnicodeEncodeError, on every
    sensor tick and every run: one such line stopped the table's change log for good."""
    hour = P0 + 4 * HOUR
    commit = hour + timedelta(minutes=3)

    def message(op="c", encoding="schema-precise", **source):
        m = order_message(op, lsn=10, commit_ms=ms(commit), tx_id=1, after=order_row(9), encoding=encoding)
        (m["payload"] if "payload" in m else m)["source"].update(source)
        return m

    huge_price = message(encoding="bare-double")
    huge_price["after"]["unit_price"] = 1e100
    lines = [
        good_line("c", 1, 5, commit),
        dumps(message(ts_ms=ms(commit) * 1000)),  # microseconds written into ts_ms
        dumps(message(lsn=2**64)),
        dumps(message(txId=2**63)),
        dumps(message(op="?", ts_ms=ms(commit) * 1000)),  # bad op, and its commit-time hint is out of range
        dumps(huge_price),
        '{"before":null,"after":{"id":' + "9" * 5000 + "}}",
        good_line("u", 1, 6, commit, quantity=3),
    ]
    path = landing_name(0, 0)
    write_landing_file(stores.landing_dir, path, lines, mtime=hour + timedelta(minutes=30))
    [staged] = ChangeLog(stores.offline, orders).stage_pending(stores.landing)
    assert (staged.account.lines, staged.account.changes, staged.account.quarantined) == (8, 2, 6)
    built = ChangeLog(stores.offline, orders).build(hour, hour + HOUR)
    assert [(r["_op"], r["id"]) for r in built.table.to_pylist()] == [("c", 1), ("u", 1)]
    reasons = {q["line"]: q["reason"] for q in built.quarantine.to_pylist()}
    assert set(reasons) == {2, 3, 4, 5, 6, 7}  # all in the hour the file landed / was committed
    assert reasons[2].startswith("field 'source.ts_ms'") and "not a commit time" in reasons[2]
    assert reasons[3].startswith("field 'source.lsn'") and reasons[4].startswith("field 'source.txId'")
    assert reasons[5].startswith("field 'op'")
    assert reasons[6].startswith("field 'after.unit_price'")
    assert reasons[7].startswith("not valid JSON")

    # a lone UTF-16 surrogate in a string column (customers.first_name)
    customer = json.loads((CAPTURED / "pg-snapshot-r-first-with-schema.json").read_text())
    customer["payload"]["source"]["ts_ms"] = ms(commit)
    good_customer = dumps(customer)
    customer["payload"]["after"]["first_name"] = "Sally\ud800"
    customers_path = landing_name(0, 0, topic=customers.topic)
    write_landing_file(stores.landing_dir, customers_path, [dumps(customer), good_customer])
    [staged] = ChangeLog(stores.offline, customers).stage_pending(stores.landing)
    assert (staged.account.changes, staged.account.quarantined) == (1, 1)
    assert "lone surrogate" in staged.quarantine_reasons[0]


def test_unreadable_files_are_quarantined_whole(stores):
    hour = P0 + 3 * HOUR
    broken = landing_name(0, 0, gz=True)
    (stores.landing_dir / broken).parent.mkdir(parents=True)
    (stores.landing_dir / broken).write_bytes(b"\x1f\x8b this is not gzip")
    os.utime(stores.landing_dir / broken, (hour.timestamp(), hour.timestamp()))
    [staged] = ChangeLog(stores.offline, orders).stage_pending(stores.landing)
    assert (staged.account.lines, staged.account.quarantined) == (1, 1)
    assert staged.quarantine_reasons[0].startswith(f"{broken}:0: not a valid gzip file")
    quarantine = ChangeLog(stores.offline, orders).build(hour, hour + HOUR).quarantine.to_pylist()
    assert [(q["file"], q["line"]) for q in quarantine] == [(broken, 0)]


# -- first partition, temporary names, symlinks -------------------------------------------------

def test_changes_before_the_first_partition_land_in_the_first_partition(stores):
    start = recent_start()
    snapshot_time = start - timedelta(days=30, minutes=17)  # the database was snapshotted long before
    write_landing_file(stores.landing_dir, landing_name(0, 0), [
        dumps(order_message("r", lsn=50, commit_ms=ms(snapshot_time), tx_id=9, after=order_row(1), snapshot="first")),
        dumps(order_message("r", lsn=50, commit_ms=ms(snapshot_time), tx_id=9, after=order_row(2), snapshot="last")),
        good_line("u", 1, 60, start + timedelta(minutes=5), quantity=4),
        good_line("u", 2, 70, start + HOUR + timedelta(minutes=5), quantity=5),
    ], mtime=start + HOUR)
    asset = build_change_log_asset(orders, hourly_partitions(start))
    instance = dg.DagsterInstance.ephemeral()
    assert materialize(asset, partition_key_of(start), stores, instance).success
    first = read_partition(stores, start)
    assert [(r["_op"], r["id"], r["_snapshot"]) for r in first] == [("r", 1, True), ("r", 2, True), ("u", 1, False)]
    assert first[0]["_commit_time"] == snapshot_time.replace(microsecond=snapshot_time.microsecond // 1000 * 1000)
    assert materialize(asset, partition_key_of(start + HOUR), stores, instance).success
    second = read_partition(stores, start + HOUR)
    assert [(r["_op"], r["id"]) for r in second] == [("u", 2)]  # only the first partition takes the past
    # and built directly, a later partition never reaches back
    log = ChangeLog(stores.offline, orders)
    assert log.build(start + HOUR, start + 2 * HOUR, is_first_partition=False).table.num_rows == 1
    assert log.build(start, start + HOUR, is_first_partition=False).table.num_rows == 1


def test_temporary_files_are_ignored(stores):
    hour = P0 + 2 * HOUR
    line = good_line("c", 1, 10, hour)
    real = landing_name(0, 0)
    ignored = [
        f"{ORDERS_DIR}/partition=0/.{orders.topic}+0+0000000001.json",
        f"{ORDERS_DIR}/partition=0/_{orders.topic}+0+0000000002.json",
        f"{ORDERS_DIR}/partition=0/{orders.topic}+0+0000000003.json.tmp",
        f"{ORDERS_DIR}/partition=0/{orders.topic}+0+0000000004.json.partial",
        f"{ORDERS_DIR}/_temporary/0/{orders.topic}+0+0000000005.json",
        f"{ORDERS_DIR}/.staging/{orders.topic}+0+0000000006.json",
    ]
    write_landing_file(stores.landing_dir, real, [line])
    for number, path in enumerate(ignored, start=2):
        write_text(stores.landing_dir, path, good_line("c", number, 10 + number, hour) + "\n")
    assert list(landing_files(stores.landing)) == [real]
    staged = ChangeLog(stores.offline, orders).stage_pending(stores.landing)
    assert [s.path for s in staged] == [real]
    log = ChangeLog(stores.offline, orders)
    assert log.build(hour, hour + HOUR).table.column("id").to_pylist() == [1]


def test_symlink_out_of_the_landing_root_is_refused(stores, tmp_path):
    hour = P0 + 3 * HOUR
    outside = tmp_path / "elsewhere"
    write_landing_file(outside, "secret.json", [good_line("c", 66, 10, hour)])
    write_landing_file(outside, f"dir/{orders.topic}+0+0000000009.json", [good_line("c", 67, 11, hour)])
    inside = landing_name(0, 0)
    write_landing_file(stores.landing_dir, inside, [good_line("c", 1, 12, hour)])
    link = landing_name(0, 5)
    os.symlink(outside / "secret.json", stores.landing_dir / link)
    os.symlink(outside / "dir", stores.landing_dir / ORDERS_DIR / "partition=1")
    (stores.landing_dir / landing_name(2, 7)).parent.mkdir(parents=True)
    os.symlink(stores.landing_dir / inside, stores.landing_dir / landing_name(2, 7))  # inside the root: fine
    staged = {s.path: s for s in ChangeLog(stores.offline, orders).stage_pending(stores.landing)}
    linked_dir_file = f"{ORDERS_DIR}/partition=1/{orders.topic}+0+0000000009.json"
    assert set(staged) == {inside, link, linked_dir_file, landing_name(2, 7)}
    for refused in (link, linked_dir_file):
        account = staged[refused].account
        assert (account.lines, account.changes, account.quarantined) == (1, 0, 1)
        assert "outside the landing root" in staged[refused].quarantine_reasons[0]
    log = ChangeLog(stores.offline, orders)
    ids = log.build(hour, hour + HOUR).table.column("id").to_pylist()
    assert 66 not in ids and 67 not in ids and ids == [1]  # the inside copy deduplicates
    quarantine = [q for h in log.staged_hours() for q in log.build(parse_hour(h), parse_hour(h) + HOUR).quarantine.to_pylist()]
    assert {q["file"] for q in quarantine} == {link, linked_dir_file}
    assert all(q["line"] == 0 and q["raw"] == "" and "outside the landing root" in q["reason"] for q in quarantine)



@given(moment=st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9998, 12, 31),
                           timezones=st.just(timezone.utc)))
def test_an_hour_label_names_the_hour_it_came_from(moment):
    assert parse_hour(hour_label(moment)) == moment.replace(minute=0, second=0, microsecond=0)


@pytest.mark.parametrize("label", ["2026-03-01", "2026-03-01T05:30", "2026-13-01T05", "2026-03-01T24",
                                   "2026-03-01t05", "2026-03-01T+5", "2026-03-01T05.parquet", ""])
def test_anything_else_is_not_an_hour_label(label):
    with pytest.raises(ValueError):
        parse_hour(label)
