"""What a feature view's data checks allow: thresholds, sample sizes and severity.

A ``FeatureView`` carries one ``CheckConfig``; every value is checked when it is made, so a
bad threshold fails at definition time, not in the middle of a run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Literal, Mapping

from feature_platform.naming import DefinitionError

SEVERITIES = ("ERROR", "WARN")


class CheckConfigError(DefinitionError):
    """A check configuration that cannot work; the message says which value and why."""


@dataclass(frozen=True)
class DriftThresholds:
    """Per-feature drift thresholds; ``None`` keeps the view-wide value, ``math.inf`` turns one off."""

    psi: float | None = None
    ks: float | None = None
    mean_shift: float | None = None

    def __post_init__(self) -> None:
        for name in ("psi", "ks", "mean_shift"):
            value = getattr(self, name)
            if value is not None:
                _check_positive(f"drift override {name}", value)
        if self.ks is not None and self.ks != math.inf and self.ks > 1:
            raise CheckConfigError(f"drift override ks={self.ks!r}: a KS statistic is at most 1 (use math.inf to turn it off)")


@dataclass(frozen=True)
class CheckConfig:
    """Data-quality checks of one feature view.

    Missing values: a feature fails when more than ``max_null_fraction`` of the checked rows
    are null (``null_fraction_overrides`` per feature; 1.0 allows a feature to be all null).

    Drift of a partition against the ``reference_days`` before it: a feature fails when its
    population stability index exceeds ``psi_threshold``, its two-sample KS statistic exceeds
    ``ks_threshold``, or its mean moved more than ``mean_shift_threshold`` reference standard
    deviations (``drift_overrides`` per feature, ``drift_exclude`` to skip one). A metric over its
    threshold counts only when it is also significant at ``drift_alpha``: that keeps small
    samples, whose statistics are noisy, from flapping. Below ``min_sample_size`` non-null values
    on either side a feature is not judged (it passes, with a note).

    Online/offline skew: ``skew_sample_size`` entities are compared value by value, and each
    numeric feature's mean may differ by at most ``skew_mean_threshold`` (relative).

    ``severity`` is what a failure means to the pipeline: "ERROR" (blocking) or "WARN".
    """

    max_null_fraction: float = 0.05
    null_fraction_overrides: Mapping[str, float] = field(default_factory=dict)
    psi_threshold: float = 0.25
    ks_threshold: float = 0.3
    mean_shift_threshold: float = 3.0
    drift_overrides: Mapping[str, DriftThresholds] = field(default_factory=dict)
    drift_exclude: tuple[str, ...] = ()
    drift_alpha: float = 1e-4
    min_sample_size: int = 30
    reference_days: int = 7
    severity: Literal["ERROR", "WARN"] = "ERROR"
    skew_sample_size: int = 200
    skew_mean_threshold: float = 0.10

    def __post_init__(self) -> None:
        _check_fraction("max_null_fraction", self.max_null_fraction)
        overrides = _check_mapping("null_fraction_overrides", self.null_fraction_overrides)
        for feature, value in overrides.items():
            _check_fraction(f"null_fraction_overrides[{feature!r}]", value)
        object.__setattr__(self, "null_fraction_overrides", overrides)

        _check_positive("psi_threshold", self.psi_threshold)
        _check_positive("ks_threshold", self.ks_threshold)
        if self.ks_threshold != math.inf and self.ks_threshold > 1:
            raise CheckConfigError(f"ks_threshold={self.ks_threshold!r}: a KS statistic is at most 1 "
                                   "(use math.inf to turn the KS test off)")
        _check_positive("mean_shift_threshold", self.mean_shift_threshold)
        drift = {}
        for feature, value in _check_mapping("drift_overrides", self.drift_overrides).items():
            if isinstance(value, Mapping):
                unknown = set(value) - {"psi", "ks", "mean_shift"}
                if unknown:
                    raise CheckConfigError(f"drift_overrides[{feature!r}]: unknown keys {sorted(unknown)}; "
                                           "use psi, ks, mean_shift")
                value = DriftThresholds(**value)
            if not isinstance(value, DriftThresholds):
                raise CheckConfigError(f"drift_overrides[{feature!r}] must be a DriftThresholds or a dict "
                                       f"like {{'psi': 0.5}}, not {type(value).__name__}")
            drift[feature] = value
        object.__setattr__(self, "drift_overrides", drift)
        if isinstance(self.drift_exclude, str):
            raise CheckConfigError("drift_exclude must be a tuple of feature names, not one string")
        object.__setattr__(self, "drift_exclude", tuple(self.drift_exclude))
        if not all(isinstance(name, str) for name in self.drift_exclude):
            raise CheckConfigError(f"drift_exclude must hold feature names, got {self.drift_exclude!r}")
        if not _is_number(self.drift_alpha) or not 0 < self.drift_alpha <= 1:
            raise CheckConfigError(f"drift_alpha={self.drift_alpha!r} must be a probability in (0, 1]")

        _check_int("min_sample_size", self.min_sample_size, minimum=2)
        _check_int("reference_days", self.reference_days, minimum=1)
        if self.severity not in SEVERITIES:
            raise CheckConfigError(f"severity={self.severity!r} must be one of {SEVERITIES}")
        _check_int("skew_sample_size", self.skew_sample_size, minimum=1)
        if not _is_number(self.skew_mean_threshold) or self.skew_mean_threshold < 0 or math.isnan(self.skew_mean_threshold):
            raise CheckConfigError(f"skew_mean_threshold={self.skew_mean_threshold!r} must be a number >= 0")

    def __hash__(self) -> int:  # the override dicts are not hashable themselves
        return hash(tuple(
            tuple(sorted(value.items())) if isinstance(value, dict) else value
            for value in (getattr(self, f.name) for f in fields(self))))

    # -- per-feature values ------------------------------------------------------------

    def null_threshold(self, feature: str) -> float:
        """The largest null fraction ``feature`` may have."""
        return self.null_fraction_overrides.get(feature, self.max_null_fraction)

    def drift_thresholds(self, feature: str) -> DriftThresholds:
        """The drift thresholds of ``feature``, overrides applied (every field set)."""
        override = self.drift_overrides.get(feature, DriftThresholds())
        return DriftThresholds(
            psi=self.psi_threshold if override.psi is None else override.psi,
            ks=self.ks_threshold if override.ks is None else override.ks,
            mean_shift=self.mean_shift_threshold if override.mean_shift is None else override.mean_shift)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_fraction(name: str, value) -> None:
    if not _is_number(value) or not 0 <= value <= 1:
        raise CheckConfigError(f"{name}={value!r} must be a fraction between 0 and 1")


def _check_positive(name: str, value) -> None:
    if not _is_number(value) or math.isnan(value) or value <= 0:
        raise CheckConfigError(f"{name}={value!r} must be a number > 0 (math.inf turns it off)")


def _check_int(name: str, value, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise CheckConfigError(f"{name}={value!r} must be an integer >= {minimum}")


def _check_mapping(name: str, value) -> dict:
    if not isinstance(value, Mapping):
        raise CheckConfigError(f"{name} must be a dict of feature name to value, not {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise CheckConfigError(f"{name}: key {key!r} must be a feature name (str)")
    return dict(value)
