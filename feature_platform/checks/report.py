"""What a check returns, and the small helpers every check shares (feature kinds, markdown).

A ``CheckOutcome`` is plain data — no Dagster in it — so the checks can be used and tested
anywhere; ``dagster_metadata()`` turns it into Dagster metadata values when wiring it into an
``AssetCheckResult``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Iterable, Literal, Mapping

import numpy as np
import pandas as pd

MetadataScalar = float | int | str

NUMERIC_KINDS = ("int", "float", "decimal")
CATEGORICAL_KINDS = ("bool", "string")
KINDS = (*NUMERIC_KINDS, *CATEGORICAL_KINDS, "timestamp")
REPORT_KEY = "report"  # the markdown table of every check


@dataclass
class CheckOutcome:
    """The result of one check.

    ``metadata`` holds only floats, ints and strings: per-feature numbers under
    ``<metric>/<feature>``, counts, the markdown table under ``"report"`` and, for drift, PNG
    paths under ``"plot/<feature>"``. ``failing`` names the features that failed;
    ``description`` says in words what failed and by how much (and any notes).
    ``details`` carries structured extras that are not metadata (e.g. skew mismatches).
    """

    passed: bool
    metadata: dict[str, MetadataScalar]
    failing: list[str]
    description: str
    severity: Literal["ERROR", "WARN"] = "ERROR"
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def markdown(self) -> str:
        return str(self.metadata.get(REPORT_KEY, ""))

    def dagster_metadata(self) -> dict:
        """The metadata as Dagster ``MetadataValue``s: markdown as md, plot paths as paths."""
        from dagster import MetadataValue  # lazy: the checks themselves need no Dagster

        values = {}
        for key, value in self.metadata.items():
            if key == REPORT_KEY or key.endswith("_sample"):
                values[key] = MetadataValue.md(str(value))
            elif key.startswith("plot/"):
                values[key] = MetadataValue.path(str(value))
            elif isinstance(value, bool):
                values[key] = MetadataValue.bool(value)
            elif isinstance(value, int):
                values[key] = MetadataValue.int(value)
            elif isinstance(value, float):
                values[key] = MetadataValue.float(value)
            else:
                values[key] = MetadataValue.text(str(value))
        return values

    def dagster_severity(self):
        """``AssetCheckSeverity.ERROR`` or ``.WARN``."""
        from dagster import AssetCheckSeverity

        return AssetCheckSeverity[self.severity]


def feature_kind(dtype: Any) -> str:
    """A feature's kind from a ``DType`` (``view.stored_dtypes()`` values) or a kind name.

    Kinds: int, float, decimal, bool, string, timestamp; "numeric" means float and
    "categorical" means string.
    """
    kind = getattr(dtype, "kind", dtype)
    if kind == "numeric":
        return "float"
    if kind == "categorical":
        return "string"
    if kind not in KINDS:
        raise ValueError(f"unknown feature kind {dtype!r}; use a DType or one of {KINDS}")
    return kind


def feature_kinds(features: Mapping[str, Any] | Iterable[str], frame: pd.DataFrame | None = None) -> dict[str, str]:
    """Features as ``{name: kind}``; a bare list of names takes kinds from ``frame``'s data."""
    if isinstance(features, Mapping):
        return {name: feature_kind(dtype) for name, dtype in features.items()}
    if isinstance(features, str):
        raise TypeError("features must be a list or dict of feature names, not one string")
    return {name: infer_kind(frame[name]) if frame is not None and name in frame else "string" for name in features}


def infer_kind(values: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(values.dtype):
        return "bool"
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return "timestamp"
    if pd.api.types.is_numeric_dtype(values.dtype):
        return "int" if pd.api.types.is_integer_dtype(values.dtype) else "float"
    present = values.dropna()
    if len(present) == 0:
        return "string"
    first = present.iloc[0]
    if isinstance(first, (bool, np.bool_)):
        return "bool"
    if isinstance(first, Decimal):
        return "decimal"
    if isinstance(first, (int, float, np.integer, np.floating)):
        return "float"
    if isinstance(first, pd.Timestamp):
        return "timestamp"
    return "string"


def numeric_values(values: pd.Series) -> np.ndarray:
    """The non-null values of a numeric (int, float or Decimal) column as float64."""
    present = values.dropna()
    if present.dtype == object:
        present = present.map(float)
    array = np.asarray(present, dtype="float64")
    return array[np.isfinite(array)]  # NaN from a float column is null; ±inf cannot be binned


def format_number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value == 0:
            return "0"
        if abs(value) >= 1e6 or abs(value) < 1e-3:
            return f"{value:.3g}"
        return f"{value:.4g}"
    return str(value)


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        return format_number(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)
