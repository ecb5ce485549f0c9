"""Fuzzing the Debezium decoder inside the suite: a few hundred mutated real envelopes
(bench/fuzz_decoder.py, which also runs the bounded 100k-input campaign outside the suite).
Every input decodes or is quarantined with a reason; nothing raises; what decodes is storable.
"""

import importlib.util
from pathlib import Path

import pytest

from assets.sources import orders
from feature_platform.cdc.landing import decode_lines

FUZZ = Path(__file__).resolve().parents[1] / "bench" / "fuzz_decoder.py"


def load_fuzzer():
    spec = importlib.util.spec_from_file_location("fuzz_decoder", FUZZ)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(120)
def test_mutated_real_envelopes_never_raise_and_decode_to_storable_rows():
    fuzzer = load_fuzzer()
    fuzzer.OUTCOMES.clear()
    fuzzer.fuzz(examples=400)()
    # the inputs reach every branch: decoded rows, tombstones, skips and quarantine
    assert {"RowChange", "Tombstone", "quarantined"} <= set(fuzzer.OUTCOMES), fuzzer.OUTCOMES


def test_the_property_catches_a_decoder_that_raises(monkeypatch):
    """The fuzzer's check is not vacuous: an exception escaping the decoder fails it."""
    fuzzer = load_fuzzer()
    line = next(seed for seed in fuzzer.seed_messages() if '"op":"c"' in seed)
    fuzzer.check_landing_text(line, None)

    def broken(message, table, key_message=None):
        raise KeyError("payload")

    monkeypatch.setattr("feature_platform.cdc.landing.decode_message", broken)
    with pytest.raises(KeyError):
        decode_lines(line, orders)
    with pytest.raises(KeyError):
        fuzzer.check_landing_text(line, None)
