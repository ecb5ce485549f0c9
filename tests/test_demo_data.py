"""The demo landing zone: real files that the platform's decoder reads like Debezium's own."""

from __future__ import annotations

import gzip
import json
import os
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from assets.sources import SOURCE_TABLES
from feature_platform.cdc.decoder import RowChange, Tombstone, decode_message
from feature_platform.cli import main
from feature_platform.demo.generator import (
    COMMIT_INDEX_FILE,
    STATE_FILE,
    append_late_batch,
    append_live_batch,
    decimal_base64,
    envelope_schema,
    generate_landing_zone,
    key_schema,
)

END = datetime(2026, 3, 2, 12, 30, tzinfo=timezone.utc)
TABLES = {table.topic: table for table in SOURCE_TABLES}
VALUE_NAME = re.compile(r"^(?P<topic>dbserver1\.inventory\.[a-z_]+)\+(?P<partition>\d+)\+(?P<offset>\d{10})\.json(?P<gz>\.gz)?$")
SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "cdc" / "samples" / "debezium-3.6.3-captured"


@dataclass(frozen=True)
class Line:
    path: Path
    number: int  # 0-based line in the file
    raw: str
    value: object  # the parsed value message (None for a tombstone)
    key: object  # the parsed key message
    decoded: RowChange | Tombstone


def _read_lines(path: Path) -> list[str]:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    text = data.decode("utf-8")
    assert text.endswith("\n")
    return text[:-1].split("\n")


def value_files(root: Path) -> list[Path]:
    return sorted(path for path in (root / "topics").rglob("*") if path.is_file() and VALUE_NAME.match(path.name))


def read_zone(root: Path, files: list[Path] | None = None) -> list[Line]:
    """Decode every line of the zone (or of ``files``) with the platform's decoder."""
    lines = []
    for path in files if files is not None else value_files(root):
        table = TABLES[VALUE_NAME.match(path.name)["topic"]]
        keys_path = path.with_name(path.name.replace(".json", ".keys.json", 1))
        values, keys = _read_lines(path), _read_lines(keys_path)
        assert len(values) == len(keys), path
        for number, (raw, raw_key) in enumerate(zip(values, keys)):
            value, key = json.loads(raw), json.loads(raw_key)
            lines.append(Line(path, number, raw, value, key, decode_message(value, table, key)))
    return lines


def changes(lines: list[Line]) -> list[Line]:
    return [line for line in lines if isinstance(line.decoded, RowChange)]


def distinct_events(lines: list[Line]) -> dict[tuple, Line]:
    """One line per change event: duplicates share table, lsn, op and key."""
    events: dict[tuple, Line] = {}
    for line in changes(lines):
        change = line.decoded
        events.setdefault((line.value["payload"]["source"]["table"], change.lsn, change.op, change.key), line)
    return events


def assert_lsn_follows_commit_order(lines: list[Line]) -> None:
    """PostgreSQL's LSN order is its commit order: transactions never overlap in LSN."""
    transactions: dict[int, list[Line]] = defaultdict(list)
    for line in distinct_events(lines).values():
        transactions[line.decoded.tx_id].append(line)
    spans = []
    for tx_id, members in transactions.items():
        commit_us = {line.value["payload"]["source"]["ts_us"] for line in members}
        assert len(commit_us) == 1, f"txId {tx_id} has several commit times"
        lsns = sorted(line.decoded.lsn for line in members)
        spans.append((commit_us.pop(), lsns[0], lsns[-1], tx_id))
    spans.sort()
    for earlier, later in zip(spans, spans[1:]):
        assert earlier[0] < later[0], "two transactions committed at the same microsecond"
        assert earlier[2] < later[1], f"txId {later[3]} committed after txId {earlier[3]} but has a lower lsn"


@pytest.fixture(scope="module")
def zone(tmp_path_factory):
    root = tmp_path_factory.mktemp("landing")
    started = time.time()
    summary = generate_landing_zone(root, end=END)
    return root, summary, read_zone(root), started


def test_default_demo_generates_in_seconds(zone):
    _, summary, _, _ = zone
    # About 0.3 s on an idle machine; the bound only leaves room for a busy CI runner.
    assert summary.seconds < 30
    assert summary.total_events > 3000
    assert summary.files > 100 and 0 < summary.gzipped_files < summary.files


def test_layout_is_the_s3_sinks_default_partitioner(zone):
    root, summary, _, started = zone
    partitions_seen = defaultdict(set)
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        assert not path.name.startswith(".") and not path.name.endswith(".tmp"), f"left-over {relative}"
        if path.is_dir() or relative.name in (STATE_FILE, COMMIT_INDEX_FILE):
            continue
        topics, topic, partition_dir, name = relative.parts
        assert topics == "topics" and topic in TABLES
        match = VALUE_NAME.match(name.replace(".keys.json", ".json"))
        assert match and match["topic"] == topic and partition_dir == f"partition={match['partition']}"
        partitions_seen[topic].add(int(match["partition"]))
        assert path.stat().st_mtime >= started - 1, "files carry the time they were written"
    assert partitions_seen == {topic: {0, 1} for topic in TABLES}
    assert len(value_files(root)) == summary.files

    # Each partition's files hold consecutive Kafka offsets, starting at 0.
    by_partition = defaultdict(list)
    for path in value_files(root):
        match = VALUE_NAME.match(path.name)
        by_partition[(match["topic"], match["partition"])].append((int(match["offset"]), len(_read_lines(path))))
    for files in by_partition.values():
        expected = 0
        for offset, count in sorted(files):
            assert offset == expected and 0 < count <= 500
            expected += count


def test_schemas_are_the_captured_ones():
    if not SAMPLES.is_dir():
        pytest.skip("captured Debezium samples not available")
    for table, sample in (("orders", "pg-create-order-decimal-base64.json"),
                          ("customers", "pg-update-customer-toast-placeholder-replica-identity-default.json")):
        message = json.loads((SAMPLES / sample).read_text())
        assert envelope_schema(table) == message["schema"]
        assert json.dumps(envelope_schema(table)) == json.dumps(message["schema"])  # field order too
    key = json.loads((SAMPLES / "pg-delete-then-tombstone.keys.jsonl").read_text().splitlines()[0])
    assert key_schema("orders") == key["schema"]


def test_envelopes_have_the_captured_field_order(zone):
    if not SAMPLES.is_dir():
        pytest.skip("captured Debezium samples not available")
    sample = json.loads((SAMPLES / "pg-create-order-decimal-base64.json").read_text())["payload"]
    _, _, lines, _ = zone
    payload = next(line.value["payload"] for line in changes(lines) if line.decoded.op == "c")
    assert list(payload) == list(sample)
    assert list(payload["source"]) == list(sample["source"])
    assert payload["source"]["version"] == "3.6.3.Final" and payload["source"]["name"] == "dbserver1"


def test_decimals_are_base64_twos_complement():
    assert decimal_base64(1175) == "BJc="  # 11.75, as in the captured samples
    assert decimal_base64(128) == "AIA="  # 1.28: a leading zero byte keeps it positive
    assert decimal_base64(1299) == "BRM="


def test_every_line_decodes(zone):
    _, summary, lines, _ = zone
    assert all(isinstance(line.decoded, (RowChange, Tombstone)) for line in lines)
    deletes = sum(1 for line in changes(lines) if line.decoded.op == "d")
    tombstones = sum(1 for line in lines if isinstance(line.decoded, Tombstone))
    assert tombstones == deletes and tombstones >= summary.tombstones > 0
    first_deliveries = distinct_events(lines)
    assert len(first_deliveries) == summary.total_events


def test_every_delete_is_followed_by_its_tombstone(zone):
    _, _, lines, _ = zone
    for before, after in zip(lines, lines[1:]):
        if isinstance(before.decoded, RowChange) and before.decoded.op == "d":
            assert after.path == before.path and after.raw == "null"
            assert after.key == before.key
        if isinstance(after.decoded, Tombstone):
            assert isinstance(before.decoded, RowChange) and before.decoded.op == "d"


def test_ops_toast_and_primary_key_changes(zone):
    _, summary, lines, _ = zone
    ops = Counter((line.value["payload"]["source"]["table"], line.decoded.op) for line in changes(lines))
    for op in "rcud":
        assert ops[("orders", op)] > 0
    assert ops[("customers", "u")] > 0 and ops[("products_on_hand", "u")] > 0

    email_changes = [line.decoded for line in changes(lines)
                     if line.decoded.op == "u" and line.value["payload"]["source"]["table"] == "customers"]
    assert all(change.unavailable == ("biography",) and "biography" not in change.values for change in email_changes)
    snapshot_customers = [line.decoded for line in changes(lines)
                          if line.decoded.op == "r" and line.value["payload"]["source"]["table"] == "customers"]
    assert all(len(change.values["biography"]) > 2000 for change in snapshot_customers)  # TOASTed size

    # Primary-key change: d(old) + tombstone + c(new), the d and c sharing lsn and txId.
    by_lsn = defaultdict(set)
    for line in changes(lines):
        if line.value["payload"]["source"]["table"] == "orders":
            by_lsn[(line.decoded.lsn, line.decoded.tx_id)].add((line.decoded.op, line.decoded.key))
    rekeys = [events for events in by_lsn.values() if {op for op, _ in events} == {"d", "c"}]
    assert rekeys and all(len(events) == 2 for events in rekeys)

    # Orders that moved to another product.
    moved = [line for line in changes(lines) if line.decoded.op == "u" and line.value["payload"]["before"]
             and line.value["payload"]["before"].get("product_id") not in (None, line.value["payload"]["after"]["product_id"])]
    assert moved


def test_snapshot_rows_share_one_lsn_and_txid(zone):
    _, _, lines, _ = zone
    snapshot = [line for line in changes(lines) if line.decoded.op == "r"]
    assert len({line.decoded.lsn for line in snapshot}) == 1
    assert len({line.decoded.tx_id for line in snapshot}) == 1
    assert all(line.decoded.snapshot for line in snapshot)
    flags = Counter(line.value["payload"]["source"]["snapshot"] for line in snapshot)
    assert flags["first"] == 1 and flags["last"] == 1
    assert min(line.decoded.lsn for line in changes(lines)) == snapshot[0].decoded.lsn
    streaming = [line for line in changes(lines) if line.decoded.op != "r"]
    assert all(line.value["payload"]["source"]["snapshot"] == "false" for line in streaming)


def test_lsn_strictly_increases_in_commit_order(zone):
    _, _, lines, _ = zone
    assert_lsn_follows_commit_order(lines)
    # Within a transaction each change has its own lsn, except a primary-key change's d and c.
    lsns = Counter((line.decoded.tx_id, line.decoded.lsn) for line in distinct_events(lines).values()
                   if line.decoded.op != "r")
    assert all(count == 1 or count == 2 for count in lsns.values())


def test_envelope_time_is_a_little_after_commit(zone):
    _, _, lines, _ = zone
    for line in changes(lines):
        delay_ms = line.value["payload"]["ts_ms"] - line.decoded.commit_ms
        assert 0 <= delay_ms


def test_duplicates_keep_their_source_and_get_new_envelope_times(zone):
    _, summary, lines, _ = zone
    deliveries = defaultdict(list)
    for line in changes(lines):
        payload = line.value["payload"]
        deliveries[(payload["source"]["table"], line.decoded.lsn, line.decoded.op, line.decoded.key)].append(payload)
    repeated = [payloads for payloads in deliveries.values() if len(payloads) > 1]
    assert repeated and summary.redelivered > 0
    for payloads in repeated:
        assert all(payload["source"] == payloads[0]["source"] for payload in payloads)
        assert len({payload["ts_ns"] for payload in payloads}) == len(payloads)

    # A connector restart re-delivered some whole file's records inside a later file.
    records = defaultdict(set)
    for line in changes(lines):
        records[line.path].add((line.decoded.lsn, line.decoded.op, line.decoded.key))
    files_of_record = defaultdict(set)
    for path, identities in records.items():
        for identity in identities:
            files_of_record[identity].add(path)
    assert any(
        len(identities) >= 2 and set.intersection(*(files_of_record[identity] for identity in identities)) - {path}
        for path, identities in records.items()
    )


def test_orders_are_realistic(zone):
    _, _, lines, _ = zone
    orders: dict[int, dict] = {}
    placed_ms: dict[int, int] = {}
    for line in sorted(distinct_events(lines).values(), key=lambda line: line.decoded.lsn):
        change = line.decoded
        if line.value["payload"]["source"]["table"] != "orders":
            continue
        if change.op == "d":
            orders.pop(change.key[0], None)
        else:
            orders[change.key[0]] = change.values
            placed_ms.setdefault(change.key[0], change.commit_ms)
    assert all(Decimal("1.00") <= order["unit_price"] <= Decimal("300.00") for order in orders.values())
    assert all(1 <= order["quantity"] <= 5 for order in orders.values())

    window_start_ms = (END - timedelta(days=30)).timestamp() * 1000
    count, value = Counter(), defaultdict(Decimal)
    for order_id, order in orders.items():
        if placed_ms[order_id] >= window_start_ms:
            count[order["purchaser"]] += 1
            value[order["purchaser"]] += order["unit_price"] * order["quantity"]
    assert max(count.values()) > 10
    assert sum(1 for total in value.values() if total > 1000) >= 3
    assert len(count) > 50  # and many customers buy now and then


def test_same_seed_gives_identical_files(tmp_path):
    def snapshot(root: Path) -> dict[str, bytes]:
        return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}

    generate_landing_zone(tmp_path / "a", weeks=1, seed=11, end=END)
    generate_landing_zone(tmp_path / "b", weeks=1, seed=11, end=END)
    generate_landing_zone(tmp_path / "c", weeks=1, seed=12, end=END)
    assert snapshot(tmp_path / "a") == snapshot(tmp_path / "b")
    assert snapshot(tmp_path / "a") != snapshot(tmp_path / "c")


def test_generating_over_a_zone_is_refused(tmp_path):
    generate_landing_zone(tmp_path, weeks=0.2, end=END)
    with pytest.raises(FileExistsError):
        generate_landing_zone(tmp_path, weeks=0.2, end=END)


def test_live_batch_continues_lsn_txid_and_offsets(tmp_path):
    generate_landing_zone(tmp_path, weeks=1, end=END)
    before = read_zone(tmp_path)
    next_offset = defaultdict(int)
    for path in value_files(tmp_path):
        match = VALUE_NAME.match(path.name)
        key = (match["topic"], match["partition"])
        next_offset[key] = max(next_offset[key], int(match["offset"]) + len(_read_lines(path)))
    max_lsn = max(line.decoded.lsn for line in changes(before))
    max_tx = max(line.decoded.tx_id for line in changes(before))
    max_commit_ms = max(line.decoded.commit_ms for line in changes(before))

    started = time.time()
    now = END + timedelta(minutes=5)
    written = append_live_batch(tmp_path, now=now)
    assert written and all(path.exists() and path.stat().st_mtime >= started - 1 for path in written)
    batch = read_zone(tmp_path, written)
    assert {line.decoded.op for line in changes(batch)} >= {"c"}
    assert min(line.decoded.lsn for line in changes(batch)) > max_lsn
    assert min(line.decoded.tx_id for line in changes(batch)) > max_tx
    for line in changes(batch):
        assert max_commit_ms < line.decoded.commit_ms <= now.timestamp() * 1000
        assert line.decoded.commit_ms >= (now - timedelta(minutes=1, seconds=5)).timestamp() * 1000
    for path in written:
        match = VALUE_NAME.match(path.name)
        assert int(match["offset"]) == next_offset[(match["topic"], match["partition"])]

    second = read_zone(tmp_path, append_live_batch(tmp_path, now=now + timedelta(seconds=30)))
    assert min(line.decoded.lsn for line in changes(second)) > max(line.decoded.lsn for line in changes(batch))
    assert_lsn_follows_commit_order(read_zone(tmp_path))


def test_late_batch_lands_now_with_old_commits_in_lsn_order(tmp_path):
    generate_landing_zone(tmp_path, weeks=1, end=END)
    started = time.time()
    written = append_late_batch(tmp_path, age=timedelta(days=2), now=END, orders=5)
    assert written and all(path.stat().st_mtime >= started - 1 for path in written)
    late = changes(read_zone(tmp_path, written))
    assert len(late) == 5 and {line.decoded.op for line in late} == {"c"}
    two_days_ago_ms = (END - timedelta(days=2)).timestamp() * 1000
    assert all(two_days_ago_ms - 61_000 <= line.decoded.commit_ms <= two_days_ago_ms for line in late)
    assert_lsn_follows_commit_order(read_zone(tmp_path))  # they fit between their neighbours

    newest = max(line.decoded.lsn for line in changes(read_zone(tmp_path)))
    live = changes(read_zone(tmp_path, append_live_batch(tmp_path, now=END + timedelta(minutes=1))))
    assert min(line.decoded.lsn for line in live) > newest


def test_live_batch_needs_a_generated_zone(tmp_path):
    with pytest.raises(FileNotFoundError):
        append_live_batch(tmp_path)


def test_cli_demo_data(tmp_path):
    runner = CliRunner()
    root = tmp_path / "landing"
    result = runner.invoke(main, ["demo-data", "--root", str(root), "--weeks", "1", "--seed", "3",
                                  "--end", "2026-03-02T12:00:00Z"])
    assert result.exit_code == 0, result.output
    assert "change events" in result.output and "orders" in result.output
    files = sorted(root.rglob("*"))

    result = runner.invoke(main, ["demo-data", "--root", str(root), "--if-absent"])
    assert result.exit_code == 0 and "left as it is" in result.output
    assert sorted(root.rglob("*")) == files

    result = runner.invoke(main, ["demo-data", "--root", str(root)])
    assert result.exit_code != 0 and "already holds files" in result.output

    result = runner.invoke(main, ["demo-data", "--root", str(root), "--if-absent", "--live",
                                  "--interval", "0", "--batches", "2"])
    assert result.exit_code == 0, result.output
    assert "batch 1" in result.output and "batch 2" in result.output
    assert len(sorted(root.rglob("*"))) > len(files)


def test_cli_default_root_comes_from_the_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("FP_LANDING_URI", str(tmp_path / "from-env"))
    result = CliRunner().invoke(main, ["demo-data", "--weeks", "0.5", "--end", "2026-03-02T12:00:00Z"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "from-env" / STATE_FILE).exists()
    assert os.listdir(tmp_path / "from-env" / "topics")
