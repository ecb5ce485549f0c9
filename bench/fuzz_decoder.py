"""Fuzz the Debezium decoder with mutated real envelopes from ../shared/cdc/samples.

The property (what staging relies on): for any bytes in a landing file, ``decode_lines``
returns one outcome per message, each either a decoded change (tombstone, skip, row change)
or a quarantine reason; it never raises. A decoded row change must also fit the change
log: its values convert to the table's Arrow schema exactly as staging converts them, and a
quarantined line's commit-time hint (used to file it under an hour) is a valid time.

Inputs start from every JSON message in the samples (captured envelopes, docs, third-party
fixtures) and are mutated structurally (a value replaced by odd JSON, a key dropped or
renamed, an object wrapped in a list, a number turned into a string...) and then, sometimes,
textually (cut, a character inserted or replaced, a chunk repeated); a ``.keys`` sibling is
fuzzed the same way. Each input is decoded against every source table of the deployment.

    .venv/bin/python bench/fuzz_decoder.py --examples 100000        # the bounded run (~minutes)

tests/test_reliability_fuzz.py runs the same property on a few hundred inputs in the suite.
Atheris is not used: hypothesis is already a test dependency and shrinks a failure to a
small input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from functools import lru_cache
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from assets.sources import SOURCE_TABLES  # noqa: E402
from feature_platform.cdc.change_log import _changes_to_table, _printable  # noqa: E402
from feature_platform.cdc.decoder import RowChange, Skipped, Tombstone, commit_ms_in_range  # noqa: E402
from feature_platform.cdc.landing import decode_lines, split_messages  # noqa: E402

SAMPLES = Path(os.environ.get("FP_CDC_SAMPLES", REPO.parent / "shared" / "cdc" / "samples"))


@lru_cache(maxsize=1)
def seed_messages() -> tuple[str, ...]:
    """Every JSON document in the samples, one per line or per file, as compact JSON text."""
    assert SAMPLES.is_dir(), f"Debezium samples not found at {SAMPLES} (set FP_CDC_SAMPLES)"
    seeds: list[str] = []
    for path in sorted(SAMPLES.rglob("*")):
        if not path.is_file() or path.suffix not in (".json", ".jsonl", ".txt"):
            continue
        text = path.read_text(errors="replace")
        candidates = [text] + text.splitlines()
        for candidate in candidates:
            try:
                document = json.loads(candidate)
            except json.JSONDecodeError:
                continue
            if isinstance(document, (dict, list)):
                seeds.append(json.dumps(document, separators=(",", ":")))
    assert len(seeds) >= 50, f"only {len(seeds)} JSON messages found under {SAMPLES}"
    return tuple(sorted(set(seeds)))


ODD_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-2**80, max_value=2**80),
    st.floats(allow_nan=False), st.text(max_size=20),
    st.sampled_from(["", "__debezium_unavailable_value", "true", "r", "c", "u", "d", "t", "m", "1e400", "-0",
                     "AAAA", "////", "2026-02-30", "99999-01-01T00:00:00Z", "\ud800", "\x00", "NaN"]),
)
ODD_JSON = st.recursive(ODD_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)), max_leaves=6)


def _paths(document, prefix=()) -> list[tuple]:
    """Every position inside a JSON document, as a path of keys and indexes."""
    found = [prefix]
    if isinstance(document, dict):
        for key, value in document.items():
            found.extend(_paths(value, (*prefix, key)))
    elif isinstance(document, list):
        for index, value in enumerate(document[:20]):
            found.extend(_paths(value, (*prefix, index)))
    return found


def _parent(document, path):
    for part in path[:-1]:
        document = document[part]
    return document


@st.composite
def mutated_document(draw) -> str:
    document = json.loads(draw(st.sampled_from(seed_messages())))
    for _ in range(draw(st.integers(0, 4))):
        paths = [p for p in _paths(document) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, last = _parent(document, path), path[-1]
        action = draw(st.sampled_from(["replace", "replace", "replace", "drop", "rename", "wrap", "stringify"]))
        if action == "replace":
            parent[last] = draw(ODD_JSON)
        elif action == "drop" and isinstance(parent, dict):
            del parent[last]
        elif action == "rename" and isinstance(parent, dict):
            parent[draw(st.text(max_size=10))] = parent.pop(last)
        elif action == "wrap":
            parent[last] = [parent[last]]
        elif action == "stringify":
            parent[last] = json.dumps(parent[last])
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=draw(st.booleans()))
    return _mutate_text(draw, text)


def _mutate_text(draw, text: str) -> str:
    for _ in range(draw(st.integers(0, 2))):
        if not text:
            break
        position = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["cut", "insert", "replace", "repeat"]))
        if action == "cut":
            text = text[:position]
        elif action == "insert":
            text = text[:position] + draw(st.text(min_size=1, max_size=3)) + text[position:]
        elif action == "replace":
            text = text[:position] + draw(st.characters()) + text[position + 1:]
        else:
            text = text[:position] + text[max(0, position - 20):position] + text[position:]
    return text


@st.composite
def landing_text(draw) -> tuple[str, str | None]:
    """The text of a landing file (1-3 messages, maybe blank lines) and maybe its keys sibling."""
    lines = draw(st.lists(st.one_of(mutated_document(), st.sampled_from(["", " ", "null", "{}", "[]"])),
                          min_size=1, max_size=3))
    keys = None
    if draw(st.booleans()):
        keys = "\n".join(draw(st.lists(mutated_document(), min_size=len(lines), max_size=len(lines))))
    return "\n".join(lines), keys


OUTCOMES: Counter = Counter()  # what the inputs decoded to, to show the fuzzing reaches every branch
INPUTS = [0]  # landing texts checked (hypothesis's examples, shrinking included)


def check_landing_text(text: str, keys: str | None) -> None:
    """The property: decoding never raises, and everything decoded can be stored."""
    INPUTS[0] += 1
    expected = len(split_messages(text))
    for table in SOURCE_TABLES:
        outcomes = decode_lines(text, table, keys)
        assert len(outcomes) == expected
        rows = []
        for outcome in outcomes:
            if outcome.decoded is None:
                assert isinstance(outcome.reason, str) and outcome.reason.strip(), outcome
                assert outcome.commit_ms_hint is None or commit_ms_in_range(outcome.commit_ms_hint)
                OUTCOMES["quarantined"] += 1
                _printable(outcome.raw)  # what the quarantine file stores
            else:
                assert outcome.reason is None
                assert isinstance(outcome.decoded, (RowChange, Tombstone, Skipped)), outcome
                OUTCOMES[type(outcome.decoded).__name__] += 1
                if isinstance(outcome.decoded, RowChange):
                    rows.append((outcome.line, outcome.decoded))
        if rows:
            _changes_to_table(table, "fuzz.json", rows)  # staging's conversion to the change-log schema


def fuzz(examples: int, seed: int | None = None):
    """A hypothesis test over ``examples`` inputs (call it to run)."""

    @settings(max_examples=examples, deadline=None, database=None, derandomize=seed is not None,
              suppress_health_check=list(HealthCheck))
    @given(landing_text())
    def decoder_never_raises(case):
        check_landing_text(*case)

    return decoder_never_raises


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=100_000)
    args = parser.parse_args()
    began = time.monotonic()
    print(f"fuzzing the decoder with {args.examples} inputs from {len(seed_messages())} sample messages "
          f"x {len(SOURCE_TABLES)} tables", flush=True)
    fuzz(args.examples)()
    print(f"ok: {INPUTS[0]} inputs checked, no exception, everything decoded storable "
          f"({time.monotonic() - began:.0f} s); outcomes over all tables: {dict(sorted(OUTCOMES.items()))}")


if __name__ == "__main__":
    main()
