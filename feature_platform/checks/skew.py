"""Online/offline skew: does serving return what training would have seen for the same entities?

Take a deterministic sample of entities (``sample_entities``), read their features online
(``get_online_features``) and offline at the same instant (``get_historical_features``), then
``check_skew`` compares them two ways:

* **exact**: per entity and feature, online == offline (floats exactly; both null counts as
  equal, one null as a mismatch); every mismatch is listed;
* **distributional**: per numeric feature, ``|mean_online − mean_offline| / max(|mean_offline|, ε)``
  must stay within ``config.skew_mean_threshold``.

Read both sides with the same ``decimals=`` mode: a ``Decimal`` never equals a float.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Any, Hashable, Iterable, Mapping

import numpy as np
import pandas as pd

from feature_platform.checks.config import CheckConfig
from feature_platform.checks.report import (NUMERIC_KINDS, REPORT_KEY, CheckOutcome, feature_kinds, format_number,
                                            markdown_table, numeric_values)

MEAN_EPSILON = 1e-9
MISMATCHES_SHOWN = 20
NO_ROW = "(no row)"


def sample_entities(keys: Iterable[Hashable], n: int, seed: int | str = 0) -> list:
    """``n`` distinct keys chosen deterministically by ``seed`` (all of them if there are fewer).

    The choice depends only on the set of keys and the seed — not their order, not the
    process — and is stable as keys come and go: a key is kept when its seeded hash is among
    the ``n`` smallest, so one new key changes the sample by at most one. Nulls are ignored.
    The sample comes back sorted.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n={n!r} must be an integer >= 0")
    unique = {_plain(key) for key in keys if not _is_null(key)}
    ranked = sorted(unique, key=lambda key: (_seeded_hash(key, seed), repr(key)))
    return sorted(ranked[:n], key=lambda key: (type(key).__name__, key))


def check_skew(online: pd.DataFrame, offline: pd.DataFrame, key: str, features: Iterable[str] | Mapping[str, Any],
               config: CheckConfig = CheckConfig()) -> CheckOutcome:
    """Compare the online and offline values of the same entities (one row per entity each side).

    ``features`` is a list of names (numeric ones are recognised from the data) or
    ``{name: DType or kind}``. An entity with a row on one side only is a mismatch for every
    feature (its missing side shows as "(no row)"); a feature absent from a side fails.

    Metadata: ``entities_checked``, ``mismatches`` (entity-feature pairs that differ),
    ``mismatched_entities``, ``mismatch_rate``, ``mismatches/<f>``, for numeric features
    ``mean_online/<f>``, ``mean_offline/<f>``, ``mean_rel_diff/<f>``; ``mismatch_sample``
    (markdown, the first 20 mismatches) and ``report`` (markdown, per feature).
    ``details["mismatches"]`` lists every ``(entity, feature, online, offline)``.
    """
    for side, frame in (("online", online), ("offline", offline)):
        if key not in frame.columns:
            raise ValueError(f"the {side} rows have no key column {key!r}")
        duplicated = frame[key][frame[key].duplicated()]
        if len(duplicated):
            raise ValueError(f"the {side} rows hold entities more than once, e.g. {duplicated.iloc[0]!r}: "
                             "give one row per entity")
    kinds = feature_kinds(features, offline)
    names = list(kinds)

    online_rows = {_plain(k): row for k, row in zip(online[key], online.to_dict("records"))}
    offline_rows = {_plain(k): row for k, row in zip(offline[key], offline.to_dict("records"))}
    entities = sorted(set(online_rows) | set(offline_rows), key=lambda k: (type(k).__name__, k))

    metadata: dict[str, float | int | str] = {"entities_checked": len(entities)}
    mismatches: list[tuple[Any, str, Any, Any]] = []
    failing: list[str] = []
    problems: list[str] = []
    notes: list[str] = []
    table: list[list[Any]] = []

    for name in names:
        absent = [side for side, frame in (("online", online), ("offline", offline)) if name not in frame.columns]
        if absent:
            failing.append(name)
            problems.append(f"{name} is absent from the {' and '.join(absent)} rows")
            table.append([name, "", "", "", "", f"FAIL: absent {'/'.join(absent)}"])
            continue
        feature_mismatches = 0
        for entity in entities:
            on_row, off_row = online_rows.get(entity), offline_rows.get(entity)
            on_value = NO_ROW if on_row is None else on_row[name]
            off_value = NO_ROW if off_row is None else off_row[name]
            if on_row is None or off_row is None or not values_equal(on_value, off_value):
                feature_mismatches += 1
                mismatches.append((entity, name, _display(on_value), _display(off_value)))
        metadata[f"mismatches/{name}"] = feature_mismatches

        status = []
        if feature_mismatches:
            status.append(f"{feature_mismatches} exact mismatch{'es' if feature_mismatches > 1 else ''}")
        mean_on = mean_off = relative = ""
        if kinds[name] in NUMERIC_KINDS:
            on_values, off_values = numeric_values(online[name]), numeric_values(offline[name])
            if len(on_values) and len(off_values):
                mean_on, mean_off = float(np.mean(on_values)), float(np.mean(off_values))
                relative = abs(mean_on - mean_off) / max(abs(mean_off), MEAN_EPSILON)
            elif len(on_values) or len(off_values):
                mean_on = float(np.mean(on_values)) if len(on_values) else float("nan")
                mean_off = float(np.mean(off_values)) if len(off_values) else float("nan")
                relative = float("inf")
            else:
                notes.append(f"{name} is null on both sides: no means to compare")
            if relative != "":
                metadata[f"mean_online/{name}"] = mean_on
                metadata[f"mean_offline/{name}"] = mean_off
                metadata[f"mean_rel_diff/{name}"] = relative
                if relative > config.skew_mean_threshold:
                    status.append(f"mean differs by {format_number(relative * 100)}% "
                                  f"(max {format_number(config.skew_mean_threshold * 100)}%)")
        if status:
            failing.append(name)
            problems.append(f"{name}: " + ", ".join(status) +
                            (f" (online mean {format_number(mean_on)}, offline {format_number(mean_off)})"
                             if relative != "" and relative > config.skew_mean_threshold else ""))
        table.append([name, feature_mismatches, mean_on, mean_off, relative, "FAIL: " + ", ".join(status) if status else "ok"])

    pairs = len(entities) * len(names)
    metadata["mismatches"] = len(mismatches)
    metadata["mismatched_entities"] = len({entity for entity, *_ in mismatches})
    metadata["mismatch_rate"] = len(mismatches) / pairs if pairs else 0.0
    metadata["mismatch_sample"] = (
        markdown_table([key, "feature", "online", "offline"], [list(m) for m in mismatches[:MISMATCHES_SHOWN]])
        + (f"\n\n… and {len(mismatches) - MISMATCHES_SHOWN} more" if len(mismatches) > MISMATCHES_SHOWN else "")
        if mismatches else "No mismatches.")
    metadata[REPORT_KEY] = markdown_table(
        ["feature", "exact mismatches", "online mean", "offline mean", "relative mean diff", "status"], table)

    if not entities:
        notes.append("no entities to compare")
    if failing:
        shown = "; ".join(f"{entity!r}.{feature}: online {on}, offline {off}"
                          for entity, feature, on, off in mismatches[:3])
        description = (f"Online/offline skew in {len(failing)} of {len(names)} features over {len(entities)} "
                       f"entities: " + "; ".join(problems) + "." + (f" First mismatches: {shown}." if shown else ""))
    else:
        description = f"Online equals offline for {len(names)} features over {len(entities)} entities."
    if notes:
        description += " Note: " + "; ".join(notes) + "."
    return CheckOutcome(not failing, metadata, failing, description, config.severity,
                        details={"mismatches": mismatches})


def values_equal(online: Any, offline: Any) -> bool:
    """Exact equality of two feature values; null (None, NaN, NA, NaT) equals only null."""
    online_null, offline_null = _is_null(online), _is_null(offline)
    if online_null or offline_null:
        return online_null and offline_null
    online, offline = _plain(online), _plain(offline)
    if isinstance(online, bool) != isinstance(offline, bool):
        return False  # True == 1 in Python, but a bool feature is not an int one
    try:
        return bool(online == offline)
    except (TypeError, ValueError):
        return False


def _is_null(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, Decimal):
        return value.is_nan()
    try:
        result = pd.isna(value)
    except (TypeError, ValueError):
        return False
    return bool(result) if np.ndim(result) == 0 else False


def _plain(value: Any) -> Any:
    """numpy scalars as Python ones, so keys and values compare and hash alike."""
    return value.item() if isinstance(value, np.generic) else value


def _display(value: Any) -> Any:
    value = _plain(value)
    if _is_null(value):
        return "null"
    if isinstance(value, float):
        return repr(value)  # every digit: an exact mismatch may sit in the last one
    return value


def _seeded_hash(key: Any, seed: int | str) -> bytes:
    return hashlib.blake2b(f"{seed}\x1f{type(key).__name__}\x1f{key}".encode(), digest_size=16).digest()
