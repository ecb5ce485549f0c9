"""The Debezium decoder against every sample in ../shared/cdc/samples, and against bad input.

* ``test_every_sample_file_has_an_expectation`` walks the samples folder recursively: a new
  sample that nobody classified fails the suite.
* ``test_sample_file_decodes_as_expected`` decodes every message of every file: captured
  envelopes (with their ``.keys`` siblings), the ``raw/`` capture wrappers (value decoded with
  its key), doc and serde JSON, Flink fixtures. It compares (op, key, lsn, commit ms, txId,
  snapshot) per message, or Tombstone / Skipped / the field a DecodeError names. Doc samples
  that are not strict JSON (INDEX.tsv ``strict_json=False``) must be refused line by line with
  "not valid JSON", never half-decoded; repaired copies of them are decoded further below.
* Then concrete values: base64 and double and string Decimals, Debezium dates and timestamps,
  TOAST placeholders, ``source.snapshot`` in all its forms, tombstones, transaction markers,
  truncates, primary-key changes, unwrapped records; and DecodeErrors naming the field.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from assets.sources import customers, orders, products
from feature_platform.cdc.decoder import (
    DecodeError,
    RowChange,
    Skipped,
    Tombstone,
    _Schema,
    decode_message,
    decode_row_values,
    parse_json,
)
from feature_platform.cdc.landing import decode_lines
from feature_platform.sources import Column, SourceTable
from conftest import (
    EPOCH,
    UTC,
    decimal_to_base64,
    dumps,
    order_message,
    order_row,
    samples_dir,
)

SAMPLES = samples_dir()

# -- tables the samples were captured from ------------------------------------------------

# The docs and Debezium's serde fixtures use the tutorial's customers table without biography.
DOC_CUSTOMERS = SourceTable(
    name="doc_customers", topic="dbserver1.inventory.customers", primary_key=("id",),
    columns=(Column("id", "int32"), Column("first_name", "string"), Column("last_name", "string"),
             Column("email", "string")),
)
# event-flattening.adoc's abstract example.
UNWRAP_EXAMPLE = SourceTable(
    name="unwrap_example", topic="my_table", primary_key=("field1",),
    columns=(Column("field1", "string"), Column("field2", "string")),
)
REWRITE_EXAMPLE = SourceTable(
    name="rewrite_example", topic="t", primary_key=("pk",), columns=(Column("pk", "int32"), Column("cola", "string")),
)
# The Debezium Server Redis example: SQL Server dbo.emp.
SQLSERVER_EMP = SourceTable(
    name="emp", topic="redislabs.dbo.emp", primary_key=("empno",),
    columns=(Column("empno", "int32"), Column("fname", "string"), Column("lname", "string"),
             Column("job", "string"), Column("mgr", "int32"), Column("hiredate", "timestamp_ms"),
             Column("sal", "decimal(19,4)"), Column("comm", "decimal(19,4)"), Column("dept", "int32")),
)
TABLES_BY_NAME = {"orders": orders, "customers": customers, "products": products}

MYSQL_3_154 = (3 << 40) | (154 << 8)  # binlog mysql-bin.000003, pos 154, row 0


def rc(op, key, lsn, commit_ms, tx_id, snapshot):
    return ("change", op, key, lsn, commit_ms, tx_id, snapshot)


TOMBSTONE = ("tombstone",)
SKIPPED = ("skipped",)


def err(field_name: str):
    return ("error", f"field '{field_name}'")


def key(payload):
    return ("key", payload)


INVALID_JSON = ("invalid-json",)


@dataclass
class Sample:
    outcomes: list
    table: SourceTable | None = None
    config: dict = field(default_factory=dict)


def _snapshot_rows(keys, lsn, commit_ms, tx_id):
    return [rc("r", (k,), lsn, commit_ms, tx_id, True) for k in keys]


CAPTURE_ORDER = [10001, 10002, 10003, 10004, 10006, 10008, 10007, 10010, 10009]

EXPECTED: dict[str, Sample] = {
    # --- real Debezium 3.6.3 captures -----------------------------------------------------
    "debezium-3.6.3-captured/connector-main.properties": Sample(
        [], config={"topic.prefix": "dbserver1", "plugin.name": "pgoutput"}),
    "debezium-3.6.3-captured/connector-variant-schemaless-double.properties": Sample(
        [], config={"decimal.handling.mode": "double", "converter.schemas.enable": "false"}),
    "debezium-3.6.3-captured/connector-variant-unwrap-string-txmeta.properties": Sample(
        [], config={"decimal.handling.mode": "string", "provide.transaction.metadata": "true",
                    "transforms.unwrap.add.fields": "op,table,lsn,source.ts_ms",
                    "transforms.unwrap.delete.tombstone.handling.mode": "rewrite"}),
    "debezium-3.6.3-captured/pg-create-order-decimal-base64.json": Sample(
        [rc("c", (10005,), 22614928, 1456913700010, 771, False)], orders),
    "debezium-3.6.3-captured/pg-delete-then-tombstone.keys.jsonl": Sample([key({"id": 10005})] * 2),
    "debezium-3.6.3-captured/pg-delete-then-tombstone.values.jsonl": Sample(
        [rc("d", (10005,), 22619944, 1457355900014, 777, False), TOMBSTONE], orders),
    "debezium-3.6.3-captured/pg-multi-row-transaction-inserts.jsonl": Sample(
        [rc("c", (10006,), 22615240, 1457015400013, 772, False),
         rc("c", (10007,), 22615496, 1457015400013, 772, False)], orders),
    "debezium-3.6.3-captured/pg-primary-key-update-d-tombstone-c.keys.jsonl": Sample(
        [key({"id": 10011}), key({"id": 10011}), key({"id": 10099})]),
    "debezium-3.6.3-captured/pg-primary-key-update-d-tombstone-c.values.jsonl": Sample(
        [rc("d", (10011,), 22622296, 1457773200009, 782, False), TOMBSTONE,
         rc("c", (10099,), 22622296, 1457773200009, 782, False)], orders),
    "debezium-3.6.3-captured/pg-schemaless-decimal-double-snapshot.jsonl": Sample(
        _snapshot_rows([10001, 10002, 10003], 22626040, 1458122411532, 787), orders),
    "debezium-3.6.3-captured/pg-schemaless-decimal-double-snapshot.keys.jsonl": Sample(
        [key({"id": 10001}), key({"id": 10002}), key({"id": 10003})]),
    "debezium-3.6.3-captured/pg-snapshot-r-first-with-schema.json": Sample(
        [rc("r", (1001,), 22591112, 1456819218622, 770, True)], customers),
    "debezium-3.6.3-captured/pg-snapshot-r-orders-with-schema.jsonl": Sample(
        _snapshot_rows([10001, 10002, 10003, 10004], 22591112, 1456819218622, 770), orders),
    "debezium-3.6.3-captured/pg-transaction-metadata-topic.keys.jsonl": Sample(
        [key({"id": "791:22629496"}), key({"id": "791:22631136"})]),
    "debezium-3.6.3-captured/pg-transaction-metadata-topic.values.jsonl": Sample([SKIPPED, SKIPPED], orders),
    "debezium-3.6.3-captured/pg-two-updates-same-transaction.jsonl": Sample(
        [rc("u", (10010,), 22621280, 1457611200012, 780, False),
         rc("u", (10010,), 22621408, 1457611200012, 780, False)], orders),
    "debezium-3.6.3-captured/pg-unwrapped-ExtractNewRecordState-decimal-string-with-schema.jsonl": Sample(
        [rc("r", (10001,), 22629400, 1458208806588, None, True),
         rc("r", (10002,), 22629400, 1458208806588, None, True),
         SKIPPED,
         rc("u", (10009,), 22629496, 1458208819284, None, False),
         rc("d", (10007,), 22631000, 1458208819284, None, False),
         SKIPPED], orders),
    "debezium-3.6.3-captured/pg-update-customer-toast-placeholder-replica-identity-default.json": Sample(
        [rc("u", (1004,), 22616152, 1457196300007, 774, False)], customers),
    "debezium-3.6.3-captured/pg-update-order-quantity-replica-identity-full.json": Sample(
        [rc("u", (10006,), 22615864, 1457082000009, 773, False)], orders),
    "debezium-3.6.3-captured/raw/variant-schemaless-double.capture.jsonl": Sample(
        _snapshot_rows(CAPTURE_ORDER, 22626040, 1458122411532, 787), orders),
    "debezium-3.6.3-captured/raw/variant-unwrap-string-txmeta.capture.jsonl": Sample(
        _snapshot_rows(CAPTURE_ORDER, 22629400, 1458208806588, None)
        + [SKIPPED, rc("u", (10009,), 22629496, 1458208819284, None, False),
           rc("d", (10007,), 22631000, 1458208819284, None, False), SKIPPED], orders),
    # --- Debezium documentation -----------------------------------------------------------
    "debezium-docs/INDEX.tsv": Sample([]),
    "debezium-docs/mysql-change-event-key.json": Sample([key({"id": 1001})]),
    "debezium-docs/mysql-create-event-with-schema.json": Sample(
        [rc("c", (1004,), MYSQL_3_154, 0, None, False)], DOC_CUSTOMERS),
    "debezium-docs/pg-create-event-with-schema.json": Sample(
        [rc("c", (1,), 24023128, 1559033904863, 555, True)], DOC_CUSTOMERS),
    "debezium-docs/tutorial-mysql-delete-key.json": Sample([key({"id": 1004})]),
    "debezium-docs/tutorial-mysql-snapshot-key.json": Sample([key({"id": 1004})]),
    "debezium-docs/tutorial-mysql-snapshot-read-event-op-r.json": Sample(
        [rc("r", (1004,), MYSQL_3_154, 0, None, True)], DOC_CUSTOMERS),
    "debezium-docs/tutorial-mysql-tombstone-value.json": Sample([TOMBSTONE], DOC_CUSTOMERS),
    "debezium-docs/tutorial-mysql-update-key.json": Sample([key({"id": 1004})]),
    # ExtractNewRecordState without add.fields: nothing to order it by.
    "debezium-docs/unwrap-output-flattened.json": Sample([err("__source_ts_ms")], UNWRAP_EXAMPLE),
    # --- Debezium's serde test fixtures ---------------------------------------------------
    "debezium-test-resources/serde-unknown-property.json": Sample(
        [rc("u", (1004,), MYSQL_3_154, 0, None, False)], DOC_CUSTOMERS),
    "debezium-test-resources/serde-unwrapped.json": Sample([err("__source_ts_ms")], DOC_CUSTOMERS),
    "debezium-test-resources/serde-update.json": Sample(
        [rc("u", (1004,), MYSQL_3_154, 0, None, False)], DOC_CUSTOMERS),
    "debezium-test-resources/serde-with-schema.json": Sample(
        [rc("c", (1004,), MYSQL_3_154, 0, None, False)], DOC_CUSTOMERS),
    "debezium-test-resources/serde-without-schema.json": Sample(
        [rc("c", (1004,), MYSQL_3_154, 0, None, False)], DOC_CUSTOMERS),
    # --- Apache Flink's fixtures (Debezium 1.2.1) -----------------------------------------
    # The last line is a delete under REPLICA IDENTITY DEFAULT without its Kafka key: before
    # and after are both null, so nothing says which row went; it must be refused, by name.
    "third-party-fixtures/flink-debezium-postgres-data-replica-identity.subset.jsonl": Sample(
        [rc("r", (101,), 34078720, 1596001099434, 601, True),
         rc("u", (106,), 34131104, 1596010889629, 602, False),
         rc("c", (110,), 34132560, 1596010946488, 604, False),
         err("before.id")], products),
    "third-party-fixtures/flink-debezium-postgres-data-schema-exclude.subset.jsonl": Sample(
        [rc("r", (109,), 34078720, 1596001099437, 601, True),
         rc("u", (106,), 34131104, 1596010889629, 602, False),
         rc("d", (111,), 34133800, 1596010988168, 608, False)], products),
}


def _index() -> dict[str, bool]:
    with open(SAMPLES / "debezium-docs" / "INDEX.tsv", newline="") as handle:
        return {row["file"]: row["strict_json"] == "True" for row in csv.DictReader(handle, delimiter="\t")}


STRICT_JSON = _index()
# Every doc sample that INDEX.tsv says is not strict JSON must be refused as such.
for _name, _strict in STRICT_JSON.items():
    if not _strict:
        EXPECTED.setdefault(f"debezium-docs/{_name}", Sample([INVALID_JSON]))


def all_sample_files() -> list[str]:
    return sorted(str(p.relative_to(SAMPLES)) for p in SAMPLES.rglob("*") if p.is_file())


def summarize(decoded) -> tuple:
    if isinstance(decoded, RowChange):
        return rc(decoded.op, decoded.key, decoded.lsn, decoded.commit_ms, decoded.tx_id, decoded.snapshot)
    if isinstance(decoded, Tombstone):
        return TOMBSTONE
    if isinstance(decoded, Skipped):
        return SKIPPED
    raise AssertionError(f"unexpected {decoded!r}")


def decode_or_error(message, table, key_message=None) -> tuple:
    try:
        return summarize(decode_message(message, table, key_message))
    except DecodeError as error:
        match = re.match(r"(field '[^']+')", error.reason)
        assert match, f"reason does not name a field: {error.reason}"
        return ("error", match.group(1))


def lines_of(path: Path) -> list[str]:
    lines = path.read_text().split("\n")
    assert lines[-1] == "", f"{path} does not end with a newline"
    return lines[:-1]


def keys_sibling(path: Path) -> Path | None:
    for suffix in (".values.jsonl", ".jsonl"):
        if path.name.endswith(suffix) and ".keys." not in path.name:
            sibling = path.with_name(path.name[: -len(suffix)] + ".keys.jsonl")
            return sibling if sibling.exists() else None
    return None


def decode_sample(relative: str) -> list[tuple]:
    """Every message of one sample file, decoded the way the landing reader would see it."""
    path = SAMPLES / relative
    sample = EXPECTED[relative]
    if path.suffix == ".properties" or path.name == "INDEX.tsv":
        return []
    if relative.startswith("debezium-docs/") and not STRICT_JSON[path.name]:
        # Refused whole, and refused line by line by the landing reader: nothing half-decodes.
        with pytest.raises(DecodeError, match="not valid JSON"):
            parse_json(path.read_text())
        outcomes = decode_lines(path.read_text(), DOC_CUSTOMERS)
        text_lines = [o for o in outcomes if o.raw.strip()]
        # Blank lines are empty values — a tombstone rendering (ENVELOPE-NOTES #6), no state —
        # and every line of text is refused as not JSON.
        assert text_lines and all(o.decoded is None for o in text_lines)
        assert all(o.reason.startswith("not valid JSON") for o in text_lines), [o.reason for o in text_lines]
        assert all(isinstance(o.decoded, Tombstone) for o in outcomes if not o.raw.strip())
        return [INVALID_JSON]
    if "/raw/" in relative:  # capture wrappers: {"run", "n", "topic", "key", "value", "headers"}
        results = []
        for line in lines_of(path):
            wrapper = parse_json(line)
            assert set(wrapper) >= {"run", "n", "topic", "key", "value"}
            results.append(decode_or_error(wrapper["value"], sample.table, wrapper["key"]))
        return results
    if ".keys." in path.name or path.name.endswith("-key.json"):
        if ".keys." in path.name:
            messages = [parse_json(line) for line in lines_of(path)]
        else:
            messages = [parse_json(path.read_text())]
        payloads = [m["payload"] if isinstance(m, dict) and "payload" in m else m for m in messages]
        return [key(p) for p in payloads]
    if path.suffix == ".json":  # one document (the captures are one line, the docs pretty-printed)
        return [decode_or_error(parse_json(path.read_text()), sample.table)]
    lines = lines_of(path)
    sibling = keys_sibling(path)
    keys = [parse_json(line) for line in lines_of(sibling)] if sibling else [None] * len(lines)
    assert len(keys) == len(lines)
    return [decode_or_error(parse_json(line), sample.table, k) for line, k in zip(lines, keys)]


def test_every_sample_file_has_an_expectation():
    files = all_sample_files()
    assert len(files) >= 58
    assert set(files) == set(EXPECTED), (
        f"unclassified samples: {sorted(set(files) - set(EXPECTED))}; "
        f"missing samples: {sorted(set(EXPECTED) - set(files))}"
    )
    docs = {f.split("/", 1)[1] for f in files if f.startswith("debezium-docs/") and f != "debezium-docs/INDEX.tsv"}
    assert set(STRICT_JSON) == docs, "INDEX.tsv must list every doc sample"


@pytest.mark.parametrize("relative", sorted(EXPECTED))
def test_sample_file_decodes_as_expected(relative):
    assert decode_sample(relative) == EXPECTED[relative].outcomes


@pytest.mark.parametrize("relative", [r for r in sorted(EXPECTED) if r.endswith(".properties")])
def test_connector_settings_match_the_variants_the_decoder_is_given(relative):
    settings = dict(
        line.split("=", 1) for line in (SAMPLES / relative).read_text().splitlines() if "=" in line
    )
    for name, value in EXPECTED[relative].config.items():
        assert settings[name] == value


# -- concrete values of the real captures --------------------------------------------------

def load(relative: str, line: int = 1):
    path = SAMPLES / relative
    if path.suffix == ".json":
        return parse_json(path.read_text())
    return parse_json(lines_of(path)[line - 1])


def at_micros(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


def test_base64_decimal_and_debezium_date():
    change = decode_message(load("debezium-3.6.3-captured/pg-create-order-decimal-base64.json"), orders)
    assert change.values == {
        "id": 10005, "order_date": change.values["order_date"], "purchaser": 1001, "quantity": 2,
        "product_id": 104, "unit_price": Decimal("11.75"),
    }
    assert load("debezium-3.6.3-captured/pg-create-order-decimal-base64.json")["payload"]["after"]["unit_price"] == "BJc="
    # 16862 days after 1970-01-01 is 2016-03-02 (2016-01-01 is day 16801; +31 January +29 February
    # = 2016-03-01 at day 16861), the day of the order's commit (2016-03-02T10:15Z).
    assert at_micros(change.values["order_date"]) == datetime(2016, 3, 2, tzinfo=UTC)
    assert at_micros(change.commit_ms * 1000).date() == datetime(2016, 3, 2).date()
    assert change.unavailable == ()
    assert isinstance(change.values["unit_price"], Decimal) and str(change.values["unit_price"]) == "11.75"


@pytest.mark.parametrize("line, encoded, price", [
    (1, "GTI=", Decimal("64.50")), (2, "BRM=", Decimal("12.99")), (3, "Bak=", Decimal("14.49")), (4, "AIA=", Decimal("1.28")),
])
def test_base64_decimals_of_the_snapshot(line, encoded, price):
    message = load("debezium-3.6.3-captured/pg-snapshot-r-orders-with-schema.jsonl", line)
    assert message["payload"]["after"]["unit_price"] == encoded
    assert decode_message(message, orders).values["unit_price"] == price
    # and the encoder of the test helpers agrees with Debezium's bytes
    assert decimal_to_base64(price, 2) == encoded


def test_double_mode_decimals_are_exact():
    path = "debezium-3.6.3-captured/raw/variant-schemaless-double.capture.jsonl"
    prices = {}
    for line in lines_of(SAMPLES / path):
        wrapper = parse_json(line)
        change = decode_message(wrapper["value"], orders, wrapper["key"])
        prices[change.key[0]] = change.values["unit_price"]
        assert isinstance(wrapper["value"]["after"]["unit_price"], float)  # a JSON number, no schema
    assert prices == {10001: Decimal("64.50"), 10002: Decimal("12.99"), 10003: Decimal("14.49"),
                      10004: Decimal("1.28"), 10006: Decimal("119.00"), 10008: Decimal("11.75"),
                      10007: Decimal("12.99"), 10010: Decimal("159.00"), 10009: Decimal("11.75")}
    assert str(prices[10002]) == "12.99"  # not 12.9900000000000002131628207280300557613372802734375
    # the same prices in precise mode (base64) and in double mode decode identically
    snapshot = decode_message(load("debezium-3.6.3-captured/pg-snapshot-r-orders-with-schema.jsonl", 2), orders)
    assert snapshot.values["unit_price"] == prices[10002]


def test_string_mode_decimals_and_unwrapped_records():
    path = "debezium-3.6.3-captured/raw/variant-unwrap-string-txmeta.capture.jsonl"
    wrappers = [parse_json(line) for line in lines_of(SAMPLES / path)]
    decoded = [decode_message(w["value"], orders, w["key"]) for w in wrappers]
    first = decoded[0]
    assert wrappers[0]["value"]["payload"]["unit_price"] == "64.50"
    assert first.values == {"id": 10001, "order_date": first.values["order_date"], "purchaser": 1001,
                            "quantity": 1, "product_id": 102, "unit_price": Decimal("64.50")}
    assert at_micros(first.values["order_date"]) == datetime(2016, 1, 16, tzinfo=UTC)  # 16816
    assert first.snapshot and first.op == "r" and first.tx_id is None
    update = decoded[10]
    assert (update.op, update.key, update.values["quantity"], update.lsn) == ("u", (10009,), 6, 22629496)
    # rewrite mode: a delete arrives as the before row with __deleted "true"
    delete = decoded[11]
    assert wrappers[11]["value"]["payload"]["__deleted"] == "true"
    assert delete.op == "d" and delete.key == (10007,)
    assert delete.values["unit_price"] == Decimal("12.99") and delete.values["quantity"] == 3
    assert (delete.lsn, delete.commit_ms) == (22631000, 1458208819284)
    assert [type(d) for d in decoded].count(Skipped) == 2
    assert [d.reason for d in decoded if isinstance(d, Skipped)] == ["transaction BEGIN marker", "transaction END marker"]


def test_rewrite_delete_without_op_field_is_a_delete():
    payload = {"id": 10007, "order_date": 16863, "purchaser": 1001, "quantity": 3, "product_id": 105,
               "unit_price": "12.99", "__deleted": "true", "__lsn": 22631000, "__source_ts_ms": 1458208819284}
    table = SourceTable("orders", orders.topic, orders.primary_key, orders.columns, decimal_handling_mode="string")
    change = decode_message(payload, table)
    assert (change.op, change.key, change.values["unit_price"]) == ("d", (10007,), Decimal("12.99"))
    payload["__deleted"] = "false"
    assert decode_message(payload, table).op == "u"


def test_toast_placeholder_is_unavailable_not_a_value():
    message = load("debezium-3.6.3-captured/pg-update-customer-toast-placeholder-replica-identity-default.json")
    assert message["payload"]["after"]["biography"] == "__debezium_unavailable_value"
    change = decode_message(message, customers)
    assert change.unavailable == ("biography",)
    assert "biography" not in change.values
    assert change.values == {"id": 1004, "first_name": "Anne Marie", "last_name": "Kretchmar",
                             "email": "annek@noanswer.org"}
    # the snapshot row, by contrast, carries the whole TOASTed text
    snapshot = decode_message(load("debezium-3.6.3-captured/pg-snapshot-r-first-with-schema.json"), customers)
    assert snapshot.unavailable == () and len(snapshot.values["biography"]) == 2569
    assert snapshot.values["biography"].startswith("bio-1001-")


def test_toast_placeholder_wrapped_in_a_map_is_unavailable_too():
    message = load("debezium-3.6.3-captured/pg-update-customer-toast-placeholder-replica-identity-default.json")
    message["payload"]["after"]["biography"] = {"value": "__debezium_unavailable_value"}
    change = decode_message(message, customers)
    assert change.unavailable == ("biography",) and "biography" not in change.values


def test_snapshot_flags_of_the_captures():
    flags = [decode_message(load("debezium-3.6.3-captured/pg-snapshot-r-orders-with-schema.jsonl", n), orders)
             for n in (1, 2, 3, 4)]
    raw = [load("debezium-3.6.3-captured/pg-snapshot-r-orders-with-schema.jsonl", n)["payload"]["source"]["snapshot"]
           for n in (1, 2, 3, 4)]
    assert raw == ["first_in_data_collection", "true", "true", "last_in_data_collection"]
    assert [f.snapshot for f in flags] == [True] * 4
    # all rows of one snapshot share one lsn and one txId (ENVELOPE-NOTES #11)
    assert {(f.lsn, f.tx_id) for f in flags} == {(22591112, 770)}
    live = decode_message(load("debezium-3.6.3-captured/pg-create-order-decimal-base64.json"), orders)
    assert load("debezium-3.6.3-captured/pg-create-order-decimal-base64.json")["payload"]["source"]["snapshot"] == "false"
    assert live.snapshot is False


@pytest.mark.parametrize("flag, expected", [
    ("first", True), ("true", True), ("last", True), ("first_in_data_collection", True),
    ("last_in_data_collection", True), ("incremental", True), ("false", False), (True, True),
    (False, False), (None, False),
])
def test_source_snapshot_in_every_form(flag, expected):
    message = order_message("r", lsn=10, commit_ms=1_700_000_000_000, tx_id=5, after=order_row(1), snapshot=flag)
    assert decode_message(message, orders).snapshot is expected


def test_snapshot_field_absent_means_not_a_snapshot():
    message = order_message("c", lsn=10, commit_ms=1_700_000_000_000, tx_id=5, after=order_row(1))
    del message["payload"]["source"]["snapshot"]
    assert decode_message(message, orders).snapshot is False


def test_tombstones_in_every_rendering():
    values = lines_of(SAMPLES / "debezium-3.6.3-captured/pg-delete-then-tombstone.values.jsonl")
    keys = lines_of(SAMPLES / "debezium-3.6.3-captured/pg-delete-then-tombstone.keys.jsonl")
    assert values[1] == "null"
    tombstone = decode_message(parse_json(values[1]), orders, parse_json(keys[1]))
    assert tombstone == Tombstone({"id": 10005})
    assert decode_message(None, orders) == Tombstone(None)
    assert decode_message({"schema": None, "payload": None}, DOC_CUSTOMERS) == Tombstone(None)
    assert decode_message(load("debezium-docs/tutorial-mysql-tombstone-value.json"), DOC_CUSTOMERS,
                          load("debezium-docs/tutorial-mysql-delete-key.json")) == Tombstone({"id": 1004})


def test_transaction_markers_are_skipped():
    for line in (1, 2):
        decoded = decode_message(load("debezium-3.6.3-captured/pg-transaction-metadata-topic.values.jsonl", line), orders)
        assert isinstance(decoded, Skipped)
    assert "BEGIN" in decode_message(load("debezium-3.6.3-captured/pg-transaction-metadata-topic.values.jsonl", 1), orders).reason


def test_primary_key_change_is_a_delete_and_a_create_sharing_lsn():
    path = SAMPLES / "debezium-3.6.3-captured/pg-primary-key-update-d-tombstone-c.values.jsonl"
    keys = [parse_json(k) for k in lines_of(path.with_name("pg-primary-key-update-d-tombstone-c.keys.jsonl"))]
    delete, tombstone, create = (decode_message(parse_json(v), orders, k) for v, k in zip(lines_of(path), keys))
    assert (delete.op, delete.key, create.op, create.key) == ("d", (10011,), "c", (10099,))
    assert delete.lsn == create.lsn == 22622296 and delete.tx_id == create.tx_id == 782
    assert tombstone == Tombstone({"id": 10011})
    # the delete carries the old row (replica identity full), the create the new one
    assert delete.values["unit_price"] == create.values["unit_price"] == Decimal("64.50")


def test_update_with_replica_identity_full_and_two_updates_in_one_transaction():
    full = decode_message(load("debezium-3.6.3-captured/pg-update-order-quantity-replica-identity-full.json"), orders)
    assert full.values["quantity"] == 2 and full.values["unit_price"] == Decimal("119.00")
    first, second = (decode_message(load("debezium-3.6.3-captured/pg-two-updates-same-transaction.jsonl", n), orders)
                     for n in (1, 2))
    assert (first.values["quantity"], second.values["quantity"]) == (4, 3)
    assert first.tx_id == second.tx_id == 780 and first.lsn < second.lsn
    assert first.commit_ms == second.commit_ms


def test_mysql_positions_order_by_file_pos_and_row():
    message = load("debezium-test-resources/serde-with-schema.json")
    base = decode_message(message, DOC_CUSTOMERS).lsn
    later_row = json.loads(json.dumps(message))
    later_row["payload"]["source"]["row"] = 1
    later_pos = json.loads(json.dumps(message))
    later_pos["payload"]["source"]["pos"] = 155
    later_file = json.loads(json.dumps(message))
    later_file["payload"]["source"]["file"] = "mysql-bin.000004"
    later_file["payload"]["source"]["pos"] = 4
    lsns = [decode_message(m, DOC_CUSTOMERS).lsn for m in (later_row, later_pos, later_file)]
    assert base < lsns[0] < lsns[1] < lsns[2]


def test_flink_delete_without_before_decodes_with_its_key():
    path = SAMPLES / "third-party-fixtures/flink-debezium-postgres-data-replica-identity.subset.jsonl"
    message = parse_json(lines_of(path)[3])
    with pytest.raises(DecodeError, match=r"field 'before\.id': primary-key column missing for op 'd'"):
        decode_message(message, products)
    change = decode_message(message, products, {"id": 111})
    assert (change.op, change.key, change.values) == ("d", (111,), {"id": 111})


def test_flink_values_are_typed():
    path = SAMPLES / "third-party-fixtures/flink-debezium-postgres-data-schema-exclude.subset.jsonl"
    change = decode_message(parse_json(lines_of(path)[0]), products)
    assert change.values == {"id": 109, "name": "spare tire", "description": "24 inch spare tire", "weight": 22.2}
    assert isinstance(change.values["weight"], float)


def test_unknown_properties_are_ignored():
    change = decode_message(load("debezium-test-resources/serde-unknown-property.json"), DOC_CUSTOMERS)
    assert "middle_name" not in change.values
    assert change.values["first_name"] == "Anne"


# -- doc samples that are not strict JSON, repaired by hand --------------------------------

def repair(text: str) -> str:
    """Undo the doc snippets' shorthand: ``{ ... }``, ``...`` lines, trailing and missing commas."""
    text = re.sub(r"\{\s*\.\.\.\s*\}", "null", text)
    text = re.sub(r"^\s*\.\.\.\s*\n", "", text, flags=re.M)
    text = re.sub(r'"\s*\n(\s*")', r'",\n\1', text)  # "name": "x"<newline>"optional": ...
    text = re.sub(r",(\s*[}\]])", r"\1", text)
    missing = text.count("{") - text.count("}")
    return text.rstrip() + "}" * missing


def repaired(name: str):
    return json.loads(repair((SAMPLES / "debezium-docs" / name).read_text()))


def test_repaired_truncate_events_are_truncates_with_no_key():
    pg = decode_message(repaired("pg-truncate-event.txt"), DOC_CUSTOMERS)
    assert pg == RowChange("t", None, {}, (), 46523128, 1559033904863, 556, False)
    mysql = decode_message(repaired("mysql-truncate-event.txt"), DOC_CUSTOMERS)
    assert (mysql.op, mysql.key, mysql.values, mysql.lsn, mysql.commit_ms) == (
        "t", None, {}, (3 << 40) | (484 << 8), 1465581029100)


def test_repaired_doc_updates_and_deletes():
    update = decode_message(repaired("pg-update-event.txt"), DOC_CUSTOMERS, repaired("pg-change-event-key.txt"))
    assert (update.op, update.key, update.values["first_name"], update.lsn, update.tx_id) == (
        "u", (1,), "Anne Marie", 24023128, 556)
    # REPLICA IDENTITY DEFAULT: the delete's before image holds only the primary key
    delete = decode_message(repaired("pg-delete-event.txt"), DOC_CUSTOMERS)
    assert (delete.op, delete.key, delete.values) == ("d", (1,), {"id": 1})
    mysql_delete = decode_message(repaired("mysql-delete-event.txt"), DOC_CUSTOMERS)
    assert (mysql_delete.op, mysql_delete.key, mysql_delete.lsn) == ("d", (1004,), (3 << 40) | (805 << 8))
    assert decode_message(repaired("mysql-update-event.txt"), DOC_CUSTOMERS).values["first_name"] == "Anne Marie"
    # Debezium 0.x MySQL: source.ts_sec instead of ts_ms, snapshot null
    tutorial = decode_message(repaired("tutorial-mysql-update-event.txt"), DOC_CUSTOMERS,
                              repaired("tutorial-mysql-tombstone-key.txt"))
    assert (tutorial.op, tutorial.key, tutorial.commit_ms, tutorial.snapshot) == ("u", (1004,), 1486501486000, False)
    tutorial_delete = decode_message(repaired("tutorial-mysql-delete-event.txt"), DOC_CUSTOMERS)
    assert (tutorial_delete.op, tutorial_delete.commit_ms) == ("d", 1486501558000)


def test_repaired_doc_messages_and_transaction_markers_are_skipped():
    for name in ("pg-message-event-transactional.txt", "pg-message-event-nontransactional.txt"):
        assert decode_message(repaired(name), DOC_CUSTOMERS) == Skipped("logical decoding message (op 'm')")
    for name in ("pg-transaction-boundary-BEGIN-END.txt", "mysql-transaction-boundary-BEGIN-END.txt"):
        documents = (SAMPLES / "debezium-docs" / name).read_text().strip().split("\n\n")
        assert [decode_message(json.loads(d), DOC_CUSTOMERS) for d in documents] == [
            Skipped("transaction BEGIN marker"), Skipped("transaction END marker")]


def test_repaired_transaction_enriched_events_lack_their_source():
    # The docs elide the source block ("..."): with no commit time nothing can be ordered.
    for name in ("pg-transaction-enriched-change-event.txt", "mysql-transaction-enriched-change-event.txt"):
        message = repaired(name)
        assert message["ts_ms"] == "1580390884335"  # stringified numbers (ENVELOPE-NOTES #18)
        assert message["source"] is None
        with pytest.raises(DecodeError, match=r"^field 'source': missing or not an object"):
            decode_message(message, SourceTable("a", "a", ("pk",), (Column("pk", "string"), Column("aa", "string"))))
    # given a source, the stringified numbers decode
    message = repaired("pg-transaction-enriched-change-event.txt")
    message["source"] = {"ts_ms": "1580390884335", "lsn": "53195832", "txId": "571"}
    change = decode_message(message, SourceTable("a", "a", ("pk",), (Column("pk", "string"), Column("aa", "string"))))
    assert (change.op, change.key, change.lsn, change.commit_ms, change.tx_id) == ("c", ("2",), 53195832, 1580390884335, 571)


def test_repaired_unwrap_samples():
    envelope = repaired("unwrap-input-update-envelope.txt")
    with pytest.raises(DecodeError, match=r"field 'source': missing or not an object"):
        decode_message(envelope, UNWRAP_EXAMPLE)
    # the doc's flattened output plus the fields add.fields=op,table,lsn,source.ts_ms adds
    flattened = {**load("debezium-docs/unwrap-output-flattened.json"), **repaired("unwrap-add-fields-__op-__table-__lsn.txt")}
    change = decode_message(flattened, UNWRAP_EXAMPLE)
    assert (change.op, change.key, change.values, change.lsn, change.commit_ms) == (
        "c", ("newvalue1",), {"field1": "newvalue1", "field2": "newvalue2"}, 123456789, 123456789)
    rewrite_text = (SAMPLES / "debezium-docs/unwrap-rewrite-delete-__deleted.txt").read_text()
    rewrite = json.loads(rewrite_text.split(":", 1)[1])  # '"value": {...}'
    with pytest.raises(DecodeError, match=r"field '__source_ts_ms': flattened record lacks __source_ts_ms, __lsn"):
        decode_message(rewrite, REWRITE_EXAMPLE)
    change = decode_message({**rewrite, "__lsn": 7, "__source_ts_ms": 1_000}, REWRITE_EXAMPLE)
    assert (change.op, change.key, change.values) == ("d", (2,), {"pk": 2, "cola": None})


def test_flattened_record_without_lsn_names_the_field():
    payload = {"id": 1, "order_date": 16862, "purchaser": 1, "quantity": 1, "product_id": 1,
               "unit_price": "BJc=", "__op": "c", "__source_ts_ms": 1_000}
    with pytest.raises(DecodeError, match=r"^field '__lsn': flattened record lacks __lsn"):
        decode_message(payload, orders)
    del payload["__source_ts_ms"]
    payload["__lsn"] = 5
    with pytest.raises(DecodeError, match=r"^field '__source_ts_ms'"):
        decode_message(payload, orders)


def test_redis_stream_sample_sqlserver_delete():
    text = (SAMPLES / "debezium-docs/dbz-server-redis-stream-message-format.txt").read_text()
    embedded = [json.loads(json.loads(m)) for m in re.findall(r'\d\) ("\{.*\}")$', text, flags=re.M)]
    assert len(embedded) == 4  # extended (key, value) and compact (key, value)
    key_message, value = embedded[0], embedded[1]
    assert embedded[2:] == embedded[:2]
    assert key_message["payload"] == {"empno": 11}
    # SQL Server has change_lsn/commit_lsn strings, not a PostgreSQL lsn or MySQL file/pos
    with pytest.raises(DecodeError, match=r"^field 'source\.lsn': missing"):
        decode_message(value, SQLSERVER_EMP, key_message)
    # its row image decodes: base64 Decimals of scale 4 and an io.debezium.time.Timestamp
    before = value["payload"]["before"]
    values, unavailable = decode_row_values(before, SQLSERVER_EMP, _Schema.of_row(value["schema"], "before"), "before")
    assert before["sal"] == "dzWUAA==" and before["comm"] == "AYag"
    assert values["sal"] == Decimal("200000.0000") and values["comm"] == Decimal("10.0000")
    assert at_micros(values["hiredate"]) == datetime(2019, 7, 9, tzinfo=UTC)
    assert unavailable == ()


# -- Debezium's time types ------------------------------------------------------------------

EVENTS = SourceTable(
    name="events", topic="db.public.events", primary_key=("id",),
    columns=(Column("id", "int64"), Column("day", "date"), Column("at_ms", "timestamp_ms"),
             Column("at_us", "timestamp_us"), Column("at_tz", "timestamp_tz"), Column("amount", "decimal(20,4)")),
)
MOMENT = datetime(2024, 2, 29, 13, 45, 7, 123456, tzinfo=UTC)
MOMENT_US = (MOMENT - EPOCH) // timedelta(microseconds=1)


def events_message(after: dict, fields: list[dict] | None) -> dict:
    payload = {"before": None, "after": after, "op": "c",
               "source": {"ts_ms": 1_709_214_307_123, "lsn": 99, "txId": 1, "snapshot": "false"}}
    if fields is None:
        return payload
    return {"schema": {"type": "struct", "fields": [
        {"type": "struct", "field": "after", "fields": fields}, {"type": "struct", "field": "source", "fields": []}]},
        "payload": payload}


def test_time_types_with_embedded_schema():
    fields = [
        {"type": "int64", "field": "id"},
        {"type": "int32", "name": "io.debezium.time.Date", "field": "day"},
        {"type": "int64", "name": "io.debezium.time.Timestamp", "field": "at_ms"},
        {"type": "int64", "name": "io.debezium.time.MicroTimestamp", "field": "at_us"},
        {"type": "string", "name": "io.debezium.time.ZonedTimestamp", "field": "at_tz"},
        {"type": "struct", "name": "io.debezium.data.VariableScaleDecimal", "field": "amount"},
    ]
    after = {"id": 1, "day": 19782, "at_ms": MOMENT_US // 1000, "at_us": MOMENT_US,
             "at_tz": "2024-02-29T14:45:07.123456+01:00", "amount": {"scale": 3, "value": decimal_to_base64(Decimal("-1234.567"), 3)}}
    values = decode_message(events_message(after, fields), EVENTS).values
    assert at_micros(values["day"]) == datetime(2024, 2, 29, tzinfo=UTC)
    assert at_micros(values["at_ms"]) == MOMENT.replace(microsecond=123000)
    assert at_micros(values["at_us"]) == MOMENT
    assert at_micros(values["at_tz"]) == MOMENT
    assert values["amount"] == Decimal("-1234.5670")


def test_time_types_without_schema_follow_the_declared_column_types():
    after = {"id": 1, "day": 19782, "at_ms": MOMENT_US // 1000, "at_us": MOMENT_US, "at_tz": "2024-02-29T13:45:07.123456Z"}
    values = decode_message(events_message(after, None), EVENTS).values
    assert at_micros(values["day"]) == datetime(2024, 2, 29, tzinfo=UTC)
    assert at_micros(values["at_ms"]) == MOMENT.replace(microsecond=123000)
    assert at_micros(values["at_us"]) == MOMENT
    assert at_micros(values["at_tz"]) == MOMENT


def test_nano_timestamps_and_iso_dates():
    fields = [{"type": "int64", "name": "io.debezium.time.NanoTimestamp", "field": "at_us"},
              {"type": "string", "field": "day"}]
    values = decode_message(events_message({"id": 1, "at_us": MOMENT_US * 1000 + 999, "day": "2024-02-29"}, fields), EVENTS).values
    assert at_micros(values["at_us"]) == MOMENT
    assert at_micros(values["day"]) == datetime(2024, 2, 29, tzinfo=UTC)


@pytest.mark.parametrize("column, raw", [
    ("at_us", 9223372036854775807),  # Debezium's +infinity sentinel
    ("at_ms", -9223372036854775808),
    ("at_tz", "not a time"),
    ("at_tz", 12),
    ("day", "2024-02-30"),
])
def test_bad_times_name_the_field(column, raw):
    with pytest.raises(DecodeError, match=rf"^field 'after\.{column}'"):
        decode_message(events_message({"id": 1, column: raw}, None), EVENTS)


# -- bad input: DecodeError naming the field ------------------------------------------------

def good_order(**changes) -> dict:
    message = load("debezium-3.6.3-captured/pg-create-order-decimal-base64.json")
    payload = message["payload"]
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        target = payload
        for parent in parents:
            target = target[parent]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value
    return message


_DELETE = object()


@pytest.mark.parametrize("changes, reason", [
    ({"after__unit_price": "%%%not-base64"}, r"^field 'after\.unit_price': '%%%not-base64' is not base64"),
    ({"after__unit_price": ""}, r"^field 'after\.unit_price'"),
    ({"after__unit_price": True}, r"^field 'after\.unit_price': boolean"),
    ({"after__quantity": "two"}, r"^field 'after\.quantity': str 'two' where an integer was expected"),
    ({"after__quantity": 2**31}, r"^field 'after\.quantity': 2147483648 does not fit int32"),
    ({"after__order_date": "yesterday"}, r"^field 'after\.order_date'"),
    ({"after__id": None}, r"^field 'after\.id': primary-key column missing for op 'c'"),
    ({"after": None}, r"^field 'after': missing for op 'c'"),
    ({"op": "x"}, r"^field 'op': unknown op 'x'"),
    ({"op": _DELETE}, r"^field 'op': missing"),
    ({"source": _DELETE}, r"^field 'source': missing or not an object"),
    ({"source": "dbserver1"}, r"^field 'source': missing or not an object"),
    ({"source__ts_ms": _DELETE}, r"^field 'source\.ts_ms': missing"),
    ({"source__ts_ms": "soon"}, r"^field 'source\.ts_ms': 'soon' is not an integer"),
    ({"source__lsn": _DELETE}, r"^field 'source\.lsn': missing"),
    ({"source__lsn": True}, r"^field 'source\.lsn': boolean"),
    ({"source__txId": 1.5}, r"^field 'source\.txId'"),
    # out of the change log's range: used to crash staging instead (see the fixes in decoder.py)
    ({"source__ts_ms": 1456913700010739}, r"^field 'source\.ts_ms': 1456913700010739 is not a commit time"),
    ({"source__ts_ms": -1}, r"^field 'source\.ts_ms'"),
    ({"source__lsn": 2**64}, r"^field 'source\.lsn': 18446744073709551616 does not fit a 64-bit integer"),
    ({"source__txId": 2**63}, r"^field 'source\.txId'"),
    ({"source__lsn": "7" * 5000}, r"^field 'source\.lsn': a 5000-digit number"),  # int() refuses > 4300 digits
    ({"source__lsn": _DELETE, "source__file": "mysql-bin." + "1" * 5000, "source__pos": 4}, r"^field 'source\.file'"),
    ({"after__unit_price": 1e100}, r"^field 'after\.unit_price': 1E\+100 has more than 10 digits"),
    ({"after__unit_price": 1.234}, r"^field 'after\.unit_price': 1\.234 has more than 2 decimal places"),
    ({"after__unit_price": 123456789.0}, r"^field 'after\.unit_price': .* more than 10 digits"),
])
def test_bad_envelopes_name_the_field(changes, reason):
    with pytest.raises(DecodeError, match=reason):
        decode_message(good_order(**changes), orders)


def test_envelope_without_op_and_source_is_taken_for_a_flattened_record():
    with pytest.raises(DecodeError, match=r"^field '__source_ts_ms': flattened record lacks"):
        decode_message(good_order(op=_DELETE, source=_DELETE), orders)


def test_bad_values_in_the_before_image_name_before():
    message = load("debezium-3.6.3-captured/pg-delete-then-tombstone.values.jsonl")
    message["payload"]["before"]["unit_price"] = "not base64!"
    with pytest.raises(DecodeError, match=r"^field 'before\.unit_price'"):
        decode_message(message, orders)


def test_bad_key_names_the_key_field():
    message = load("debezium-3.6.3-captured/pg-delete-then-tombstone.values.jsonl")
    message["payload"]["before"] = None
    with pytest.raises(DecodeError, match=r"^field 'key\.id': str 'x' where an integer was expected"):
        decode_message(message, orders, {"id": "x"})
    assert decode_message(message, orders, {"id": 10005}).key == (10005,)


def test_strings_that_parquet_cannot_hold_are_refused():
    message = load("debezium-3.6.3-captured/pg-update-customer-toast-placeholder-replica-identity-default.json")
    message["payload"]["after"]["first_name"] = "Anne\ud800"
    with pytest.raises(DecodeError, match=r"^field 'after\.first_name': .*lone surrogate"):
        decode_message(message, customers)


def test_numbers_beyond_any_double_are_refused():
    path = SAMPLES / "third-party-fixtures/flink-debezium-postgres-data-schema-exclude.subset.jsonl"
    message = parse_json(lines_of(path)[0])
    message["after"]["weight"] = 10**400
    with pytest.raises(DecodeError, match=r"^field 'after\.weight': .*does not fit float64"):
        decode_message(message, products)


@pytest.mark.parametrize("line, reason", [
    ('{"before": null, "after": {"id": 1', r"^not valid JSON: Expecting"),
    ("not json at all", r"^not valid JSON"),
    ('{"a": 1} {"b": 2}', r"^not valid JSON: Extra data"),
    ('{"lsn": ' + "1" * 5000 + "}", r"^not valid JSON: .*4300 digits"),  # used to escape as a bare ValueError
    ("", r"^not valid JSON"),
])
def test_non_json_lines(line, reason):
    with pytest.raises(DecodeError, match=reason):
        parse_json(line)


def test_non_object_messages_are_refused():
    with pytest.raises(DecodeError, match=r"^message is a JSON list, not an object"):
        decode_message([1, 2], orders)
    with pytest.raises(DecodeError, match=r"^message is a JSON int, not an object"):
        decode_message({"schema": None, "payload": 3}, orders)


def test_every_decode_error_is_a_decode_error_only():
    """Fuzz the real capture: mutate each field to odd JSON values; only DecodeError may escape."""
    base = load("debezium-3.6.3-captured/pg-create-order-decimal-base64.json")
    odd_values = [None, True, -1, 0, 2**70, -2**70, 1e308, "", "x", "\ud800", [], {}, [1], {"a": 1}, "__debezium_unavailable_value"]
    paths = [("after", k) for k in base["payload"]["after"]] + [("source", k) for k in base["payload"]["source"]] + [
        ("op",), ("after",), ("source",), ("before",)]
    for path in paths:
        for odd in odd_values:
            message = json.loads(json.dumps(base))
            target = message["payload"]
            for part in path[:-1]:
                target = target[part]
            target[path[-1]] = odd
            try:
                decoded = decode_message(message, orders)
            except DecodeError as error:
                assert error.reason
                continue
            if isinstance(decoded, RowChange):
                # whatever decodes must fit the change log's types
                assert -2**63 <= decoded.lsn < 2**63 and 0 <= decoded.commit_ms <= 253402300799999
                for name, value in decoded.values.items():
                    if isinstance(value, str):
                        value.encode("utf-8")
                    if orders.column(name).type == "int32" and value is not None:
                        assert -2**31 <= value < 2**31


def test_stringified_dumps_match_debezium_line_format():
    # the helpers write what the real captures hold: same keys, same types
    real = load("debezium-3.6.3-captured/pg-create-order-decimal-base64.json")
    made = order_message("c", lsn=22614928, commit_ms=1456913700010, tx_id=771,
                         after=order_row(10005, day=16862, purchaser=1001, quantity=2, product_id=104))
    assert made["schema"] == real["schema"]
    assert made["payload"]["after"] == real["payload"]["after"]
    assert set(made["payload"]["source"]) == set(real["payload"]["source"])
    assert decode_message(json.loads(dumps(made)), orders).values == decode_message(real, orders).values
