"""Fuzzing the Debezium decoder inside the suite: a few hundred mutated real envelopes
(bench/fuzz_decoder.py, which also runs the bounded 100k-input campaign outside the suite).
Every input decodes or is quarantined with a reason; nothing raises; what decodes is storable.
"""

import json

import pytest

from assets.sources import orders
from conftest import load_bench_script
from feature_platform.cdc.landing import decode_lines


@pytest.mark.timeout(120)
def test_mutated_real_envelopes_never_raise_and_decode_to_storable_rows():
    fuzzer = load_bench_script("fuzz_decoder")
    fuzzer.OUTCOMES.clear()
    fuzzer.fuzz(examples=400)()
    # the inputs reach every branch: decoded rows, tombstones, skips and quarantine
    assert {"RowChange", "Tombstone", "quarantined"} <= set(fuzzer.OUTCOMES), fuzzer.OUTCOMES


def test_the_property_catches_a_decoder_that_raises(monkeypatch):
    """The fuzzer's check is not vacuous: an exception escaping the decoder fails it."""
    fuzzer = load_bench_script("fuzz_decoder")
    line = next(seed for seed in fuzzer.seed_messages() if '"op":"c"' in seed)
    fuzzer.check_landing_text(line, None)

    def broken(message, table, key_message=None):
        raise KeyError("payload")

    monkeypatch.setattr("feature_platform.cdc.landing.decode_message", broken)
    with pytest.raises(KeyError):
        decode_lines(line, orders)
    with pytest.raises(KeyError):
        fuzzer.check_landing_text(line, None)


def test_a_malformed_schema_entry_is_quarantined_with_the_field_named():
    """Found by the 100k fuzz run: a list where a schema field's logical type name goes
    raised TypeError out of the decoder (staging of the whole file crashed)."""
    message = {"schema": {"type": "struct", "fields": [
        {"type": "int32", "field": "id"},
        {"type": "int32", "optional": False, "name": ["io.debezium.time.Date"], "field": "order_date"}]},
        "payload": {"id": 10001, "order_date": 16816, "purchaser": 1001, "quantity": 1, "product_id": 102,
                    "unit_price": "64.50", "__op": "r", "__lsn": 22629400, "__source_ts_ms": 1458208806588}}
    [outcome] = decode_lines(json.dumps(message), orders)
    assert outcome.decoded is None
    assert "order_date" in outcome.reason and "schema entry is malformed" in outcome.reason
    message["schema"]["fields"][1]["name"] = "io.debezium.time.Date"
    message["schema"]["fields"].append({"type": "string", "field": "unit_price", "parameters": ["scale"]})
    [outcome] = decode_lines(json.dumps(message), orders)
    assert outcome.decoded is None and "unit_price" in outcome.reason
