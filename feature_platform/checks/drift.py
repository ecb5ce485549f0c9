"""Drift: does a partition's feature distribution differ from the reference period before it?

Numeric features (int, float, decimal) are compared three ways:

* **PSI**, the population stability index ``Σ (c − r) · ln(c / r)`` over 10 bins cut at the
  reference's deciles (values outside the reference's range fall in the edge bins; an empty
  bin counts as a proportion of ``PSI_EPSILON``);
* **KS**, the two-sample Kolmogorov–Smirnov statistic (``scipy.stats.ks_2samp``);
* **mean shift**, ``(mean_current − mean_reference) / std_reference`` (and, for information,
  the ratio of standard deviations).

Bool and string features get PSI over categories: each category that is frequent in the
reference (at least ``MIN_CATEGORY_COUNT`` values and 1%, at most ``MAX_CATEGORIES``) is a bin,
everything else — rare values, values never seen in the reference — shares one "(other)" bin,
so an identifier-like column (emails) does not drift just because its values are new.

A metric over its threshold counts as drift only when it is also significant at
``config.drift_alpha``: PSI when Pearson's χ² test of homogeneity over the pooled sample's
deciles (or the categories) rejects, KS when its own p-value does, mean shift when both Welch's
t-test and the KS test do (one outlier moves a mean, not a distribution). On large samples the
threshold decides; on small ones, whose statistics are noisy (PSI over 10 bins of 30 values is
~1 on identical distributions), significance does: a stationary feature does not flap. Below
``config.min_sample_size`` non-null values on either side a feature is not judged at all.
Nulls are left out: their rate is the missing-values check's job. Timestamps are not checked.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from feature_platform.checks.config import CheckConfig
from feature_platform.checks.report import (CATEGORICAL_KINDS, NUMERIC_KINDS, REPORT_KEY, CheckOutcome, feature_kinds,
                                            format_number, markdown_table, numeric_values)

PSI_BINS = 10
PSI_EPSILON = 1e-4
MAX_CATEGORIES = 20
MIN_CATEGORY_COUNT = 5
MIN_CATEGORY_SHARE = 0.01
OTHER = "(other)"


@dataclass
class FeatureDrift:
    """The drift metrics of one feature (``None``: not applicable to its kind)."""

    feature: str
    kind: str
    n_reference: int
    n_current: int
    psi: float
    psi_pvalue: float
    ks: float | None = None
    ks_pvalue: float | None = None
    mean_shift: float | None = None  # signed, in reference standard deviations
    mean_shift_pvalue: float | None = None
    std_ratio: float | None = None
    mean_reference: float | None = None
    mean_current: float | None = None
    bins: list[str] | None = None  # the categorical bins, for the plot


def check_drift(current: pd.DataFrame, reference: pd.DataFrame, features: Mapping[str, Any],
                config: CheckConfig = CheckConfig(), report_dir: Path | str | None = None) -> CheckOutcome:
    """Compare ``current`` (a partition's rows) with ``reference`` (the rows of the days before).

    ``features`` is ``{name: DType or kind}`` (``view.stored_dtypes()`` works as is). With
    ``report_dir``, a PNG per judged feature (reference vs current) is written there as
    ``drift_<feature>.png``, its path in metadata ``plot/<feature>``.

    Metadata: ``reference_rows``, ``current_rows``, ``features_checked``, and per judged
    feature ``psi/<f>``, ``psi_pvalue/<f>``, ``n_reference/<f>``, ``n_current/<f>``; numeric
    features also ``ks/<f>``, ``ks_pvalue/<f>``, ``mean_shift/<f>`` (signed, reference sds),
    ``std_ratio/<f>``; then ``report`` (markdown) and ``plot/<f>``.
    """
    kinds = feature_kinds(features)
    metadata: dict[str, float | int | str] = {"reference_rows": len(reference), "current_rows": len(current)}
    notes: list[str] = []
    failing: list[str] = []
    problems: list[str] = []
    table: list[list[Any]] = []
    results: list[FeatureDrift] = []
    small: list[str] = []

    for name, kind in kinds.items():
        if name in config.drift_exclude:
            notes.append(f"{name} is excluded from drift checks")
            continue
        if kind not in NUMERIC_KINDS and kind not in CATEGORICAL_KINDS:
            notes.append(f"{name} ({kind}) is not checked for drift")
            continue
        absent = [side for side, frame in (("current", current), ("reference", reference)) if name not in frame.columns]
        if absent:
            notes.append(f"{name} is absent from the {' and '.join(absent)} rows")
            continue
        if kind in NUMERIC_KINDS:
            ref_values, cur_values = numeric_values(reference[name]), numeric_values(current[name])
        else:
            ref_values, cur_values = _category_values(reference[name]), _category_values(current[name])
        n_ref, n_cur = len(ref_values), len(cur_values)
        metadata[f"n_reference/{name}"] = n_ref
        metadata[f"n_current/{name}"] = n_cur
        if min(n_ref, n_cur) < config.min_sample_size:
            small.append(f"{name} ({n_cur} current, {n_ref} reference values)")
            table.append([name, kind, n_ref, n_cur, "", "", "", "", "not judged: too few values"])
            continue

        if kind in NUMERIC_KINDS:
            drift = _numeric_drift(name, kind, ref_values, cur_values)
        else:
            drift = _categorical_drift(name, kind, ref_values, cur_values)
        results.append(drift)
        exceeded = _exceeded(drift, config)
        metadata[f"psi/{name}"] = drift.psi
        metadata[f"psi_pvalue/{name}"] = drift.psi_pvalue
        if drift.ks is not None:
            metadata[f"ks/{name}"] = drift.ks
            metadata[f"ks_pvalue/{name}"] = drift.ks_pvalue
            metadata[f"mean_shift/{name}"] = drift.mean_shift
            metadata[f"std_ratio/{name}"] = drift.std_ratio
        if exceeded:
            failing.append(name)
            problem = f"{name}: " + ", ".join(exceeded)
            if drift.mean_reference is not None:
                problem += f" (mean {format_number(drift.mean_reference)} → {format_number(drift.mean_current)})"
            problems.append(problem)
        table.append([name, kind, n_ref, n_cur, drift.psi,
                      "" if drift.ks is None else drift.ks,
                      "" if drift.mean_shift is None else drift.mean_shift,
                      "" if drift.std_ratio is None else drift.std_ratio,
                      "DRIFT: " + ", ".join(exceeded) if exceeded else "ok"])

    metadata["features_checked"] = len(results)
    if small:
        notes.append(f"not judged, fewer than {config.min_sample_size} non-null values on a side: " + "; ".join(small))
    header = ["feature", "kind", "reference n", "current n", "PSI", "KS", "mean shift (sd)", "std ratio", "status"]
    metadata[REPORT_KEY] = markdown_table(header, table) if table else "No feature to compare."

    if report_dir is not None and results:
        directory = Path(report_dir)
        directory.mkdir(parents=True, exist_ok=True)
        for drift in results:
            path = directory / f"drift_{_file_safe(drift.feature)}.png"
            _plot(drift, reference[drift.feature], current[drift.feature], path, drift.feature in failing)
            metadata[f"plot/{drift.feature}"] = str(path)

    if failing:
        description = (f"Drift in {len(failing)} of {len(results)} features ({len(current)} rows vs "
                       f"{len(reference)} reference rows): " + "; ".join(problems) + ".")
    elif results:
        description = (f"No drift in {len(results)} features ({len(current)} rows vs {len(reference)} reference rows).")
    else:
        description = "No feature had enough values to judge drift: passes."
    if notes:
        description += " Note: " + "; ".join(notes) + "."
    return CheckOutcome(not failing, metadata, failing, description, config.severity, details={"features": results})


# -- metrics ---------------------------------------------------------------------------

def population_stability_index(reference_counts: np.ndarray, current_counts: np.ndarray,
                               epsilon: float = PSI_EPSILON) -> float:
    """PSI between two histograms over the same bins (counts); empty bins count as ``epsilon``."""
    reference = np.maximum(reference_counts / max(reference_counts.sum(), 1), epsilon)
    current = np.maximum(current_counts / max(current_counts.sum(), 1), epsilon)
    return float(np.sum((current - reference) * np.log(current / reference)))


def quantile_bin_counts(reference: np.ndarray, current: np.ndarray, bins: int = PSI_BINS):
    """Counts of both samples in bins cut at the reference's quantiles (edge bins open-ended)."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    size = len(edges) + 1
    reference_counts = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=size)
    current_counts = np.bincount(np.searchsorted(edges, current, side="right"), minlength=size)
    return edges, reference_counts, current_counts


def homogeneity_pvalue(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """Pearson's χ² test that two samples' counts over the same bins share one distribution."""
    from scipy import stats

    occupied = (reference_counts + current_counts) > 0
    if occupied.sum() < 2:
        return 1.0
    table = np.vstack([reference_counts[occupied], current_counts[occupied]])
    return float(stats.chi2_contingency(table, correction=False).pvalue)


def _numeric_drift(name: str, kind: str, reference: np.ndarray, current: np.ndarray) -> FeatureDrift:
    from scipy import stats

    _, reference_counts, current_counts = quantile_bin_counts(reference, current)
    psi = population_stability_index(reference_counts, current_counts)
    # Significance over the pooled sample's deciles: bins cut at the reference's own deciles fit
    # a small reference by construction, which a χ² test cannot account for.
    pooled = np.concatenate([reference, current])
    _, reference_pooled, current_pooled = quantile_bin_counts(pooled, current)
    psi_pvalue = homogeneity_pvalue(reference_pooled - current_pooled, current_pooled)
    with warnings.catch_warnings():  # "exact calculation unsuccessful, switching to asymp": fine
        warnings.simplefilter("ignore", RuntimeWarning)
        ks = stats.ks_2samp(reference, current)
    mean_reference, mean_current = float(np.mean(reference)), float(np.mean(current))
    std_reference, std_current = float(np.std(reference, ddof=1)), float(np.std(current, ddof=1))
    difference = mean_current - mean_reference
    scale = std_reference if std_reference > 0 else std_current
    if scale > 0:
        mean_shift = difference / scale
    else:
        mean_shift = 0.0 if difference == 0 else math.copysign(math.inf, difference)
    if std_reference == 0 and std_current == 0:
        shift_pvalue = 1.0 if difference == 0 else 0.0
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            shift_pvalue = float(stats.ttest_ind(current, reference, equal_var=False).pvalue)
    if std_reference > 0:
        std_ratio = std_current / std_reference
    else:
        std_ratio = 1.0 if std_current == 0 else math.inf
    return FeatureDrift(name, kind, len(reference), len(current), psi, psi_pvalue, float(ks.statistic),
                        float(ks.pvalue), float(mean_shift), shift_pvalue, float(std_ratio), mean_reference, mean_current)


def _category_values(values: pd.Series) -> np.ndarray:
    return values.dropna().astype(str).to_numpy(dtype=object)


def _category_counts(values: np.ndarray, bins: list[str]) -> np.ndarray:
    """Counts per bin; a value that is not one of the bins counts in the last, "(other)"."""
    index = {category: position for position, category in enumerate(bins)}
    positions = pd.Series(values, dtype=object).map(index).fillna(len(bins) - 1).to_numpy(dtype="int64")
    return np.bincount(positions, minlength=len(bins))


def _categorical_drift(name: str, kind: str, reference: np.ndarray, current: np.ndarray) -> FeatureDrift:
    reference_counts = pd.Series(reference).value_counts()
    minimum = max(MIN_CATEGORY_COUNT, math.ceil(MIN_CATEGORY_SHARE * len(reference)))
    frequent = [category for category, count in reference_counts.items() if count >= minimum][:MAX_CATEGORIES]
    bins = sorted(frequent) + [OTHER]
    reference_counts, current_counts = _category_counts(reference, bins), _category_counts(current, bins)
    psi = population_stability_index(reference_counts, current_counts)
    psi_pvalue = homogeneity_pvalue(reference_counts, current_counts)
    return FeatureDrift(name, kind, len(reference), len(current), psi, psi_pvalue, bins=bins)


def _exceeded(drift: FeatureDrift, config: CheckConfig) -> list[str]:
    """The metrics over their thresholds and significant, in words (empty: no drift)."""
    thresholds = config.drift_thresholds(drift.feature)
    alpha = config.drift_alpha
    exceeded = []
    if drift.psi > thresholds.psi and drift.psi_pvalue < alpha:
        exceeded.append(f"PSI {format_number(drift.psi)} > {format_number(thresholds.psi)}")
    if drift.ks is not None and drift.ks > thresholds.ks and drift.ks_pvalue < alpha:
        exceeded.append(f"KS {format_number(drift.ks)} > {format_number(thresholds.ks)}")
    if (drift.mean_shift is not None and abs(drift.mean_shift) > thresholds.mean_shift
            and drift.mean_shift_pvalue < alpha and drift.ks_pvalue < alpha):
        exceeded.append(f"mean shift {drift.mean_shift:+.2f} sd > {format_number(thresholds.mean_shift)} sd")
    return exceeded


# -- report ----------------------------------------------------------------------------

def _file_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _plot(drift: FeatureDrift, reference: pd.Series, current: pd.Series, path: Path, drifted: bool) -> None:
    """Reference vs current, overlaid: histograms (numeric) or category shares (categorical)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg, without touching pyplot's global backend
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4), dpi=90)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    if drift.bins is None:
        reference_values, current_values = numeric_values(reference), numeric_values(current)
        edges = np.histogram_bin_edges(np.concatenate([reference_values, current_values]), bins=30)
        axes.hist(reference_values, bins=edges, density=True, alpha=0.5, label=f"reference (n={drift.n_reference})")
        axes.hist(current_values, bins=edges, density=True, alpha=0.5, label=f"current (n={drift.n_current})")
        axes.set_ylabel("density")
        subtitle = (f"PSI {format_number(drift.psi)}  KS {format_number(drift.ks)}  "
                    f"mean shift {drift.mean_shift:+.2f} sd")
    else:
        def shares(values: np.ndarray) -> np.ndarray:
            counts = _category_counts(values, drift.bins)
            return counts / max(counts.sum(), 1)

        positions = np.arange(len(drift.bins))
        axes.bar(positions - 0.2, shares(_category_values(reference)), width=0.4, label=f"reference (n={drift.n_reference})")
        axes.bar(positions + 0.2, shares(_category_values(current)), width=0.4, label=f"current (n={drift.n_current})")
        axes.set_xticks(positions, [label[:20] for label in drift.bins], rotation=45, ha="right")
        axes.set_ylabel("share")
        subtitle = f"PSI {format_number(drift.psi)}"
    axes.set_title(f"{drift.feature}: {'DRIFT' if drifted else 'ok'} — {subtitle}", fontsize=10)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, format="png")
