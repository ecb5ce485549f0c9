"""The check library (feature_platform/checks): real Great Expectations, SciPy and matplotlib, no mocks.

* missing values: a null burst fails naming the feature and its fraction; an override lets a
  legitimately-null feature pass; empty frames and absent columns; the threshold's edge.
* drift: stationary data over 50 seeds never fails at the default thresholds (from 30 values a
  side to thousands, numeric, decimal, bool and string features); a +3 sd shift fails with PSI
  and KS in metadata and a PNG written; small samples pass with a note; categorical PSI.
* skew: an exact mismatch names entity and feature; nulls on both sides are equal; the
  distributional threshold; deterministic entity sampling.
"""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from feature_platform.checks import (CheckConfig, CheckConfigError, CheckOutcome, DriftThresholds, check_drift,
                                     check_missing_values, check_skew, sample_entities, values_equal)
from feature_platform.checks.drift import PSI_EPSILON, population_stability_index, quantile_bin_counts
from feature_platform.expressions import BOOL, FLOAT, INT, STRING, TIMESTAMP, decimal

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Shaped like customer_orders' history rows: int, decimal (exact money), float, bool, timestamp.
ORDER_FEATURES = {"order_count_30d": INT, "total_spend_30d": decimal(2), "avg_order_value_30d": FLOAT,
                  "is_high_value": BOOL, "last_order_date": TIMESTAMP}


def order_rows(rng: np.random.Generator, n: int, spend_shift_sd: float = 0.0) -> pd.DataFrame:
    """History rows like customer_orders' (nullable types as the offline store reads them)."""
    spend = rng.normal(500 + 150 * spend_shift_sd, 150, n).round(2)
    return pd.DataFrame({
        "customer_id": np.arange(n, dtype="int64"),
        "order_count_30d": pd.array(rng.poisson(4, n), dtype="Int64"),
        "total_spend_30d": [Decimal(f"{value:.2f}") for value in spend],
        "avg_order_value_30d": rng.gamma(2.0, 40.0, n),
        "is_high_value": pd.array(spend > 600, dtype="boolean"),
        "segment": pd.array(rng.choice(["new", "regular", "vip", "lapsed"], n, p=[0.2, 0.5, 0.1, 0.2]), dtype="string"),
        "last_order_date": pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 86400 * 7, n), "s"),
    })


DRIFT_FEATURES = {**ORDER_FEATURES, "segment": STRING}


# -- config ----------------------------------------------------------------------------

def test_config_defaults_and_overrides():
    config = CheckConfig(null_fraction_overrides={"avg_order_value_30d": 1.0},
                         drift_overrides={"total_spend_30d": {"psi": 0.5}}, severity="WARN")
    assert config.null_threshold("avg_order_value_30d") == 1.0
    assert config.null_threshold("order_count_30d") == 0.05
    assert config.drift_thresholds("total_spend_30d") == DriftThresholds(psi=0.5, ks=0.3, mean_shift=3.0)
    assert config.drift_thresholds("other") == DriftThresholds(psi=0.25, ks=0.3, mean_shift=3.0)
    assert (CheckConfig().min_sample_size, CheckConfig().reference_days, CheckConfig().skew_sample_size,
            CheckConfig().skew_mean_threshold, CheckConfig().severity) == (30, 7, 200, 0.10, "ERROR")
    assert hash(config) == hash(CheckConfig(null_fraction_overrides={"avg_order_value_30d": 1.0},
                                            drift_overrides={"total_spend_30d": {"psi": 0.5}}, severity="WARN"))
    assert config == CheckConfig(null_fraction_overrides={"avg_order_value_30d": 1.0},
                                 drift_overrides={"total_spend_30d": DriftThresholds(psi=0.5)}, severity="WARN")


@pytest.mark.parametrize("arguments, message", [
    ({"max_null_fraction": 1.5}, "max_null_fraction=1.5 must be a fraction between 0 and 1"),
    ({"max_null_fraction": -0.1}, "max_null_fraction"),
    ({"null_fraction_overrides": {"email": 2}}, "null_fraction_overrides['email']=2"),
    ({"null_fraction_overrides": ["email"]}, "null_fraction_overrides must be a dict"),
    ({"psi_threshold": 0}, "psi_threshold=0 must be a number > 0"),
    ({"ks_threshold": 1.5}, "a KS statistic is at most 1"),
    ({"mean_shift_threshold": float("nan")}, "mean_shift_threshold"),
    ({"drift_overrides": {"x": {"psi": -1}}}, "drift override psi=-1"),
    ({"drift_overrides": {"x": {"psl": 1}}}, "unknown keys ['psl']"),
    ({"drift_exclude": "email"}, "drift_exclude must be a tuple"),
    ({"drift_alpha": 0}, "drift_alpha=0 must be a probability"),
    ({"min_sample_size": 1}, "min_sample_size=1 must be an integer >= 2"),
    ({"min_sample_size": 30.0}, "min_sample_size=30.0 must be an integer"),
    ({"reference_days": 0}, "reference_days=0"),
    ({"severity": "error"}, "severity='error' must be one of ('ERROR', 'WARN')"),
    ({"skew_sample_size": 0}, "skew_sample_size=0"),
    ({"skew_mean_threshold": -0.1}, "skew_mean_threshold=-0.1"),
    ({"max_null_fraction": True}, "max_null_fraction=True"),
])
def test_config_rejects_bad_values(arguments, message):
    with pytest.raises(CheckConfigError) as error:
        CheckConfig(**arguments)
    assert message in str(error.value)
    assert isinstance(error.value, ValueError)


# -- missing values --------------------------------------------------------------------

def test_null_burst_fails_naming_the_feature_and_fraction():
    rows = order_rows(np.random.default_rng(1), 200)
    rows.loc[:79, "total_spend_30d"] = None  # 40% null
    rows.loc[:4, "order_count_30d"] = pd.NA  # 2.5%: within 5%
    outcome = check_missing_values(rows, ORDER_FEATURES, CheckConfig())
    assert not outcome.passed
    assert outcome.failing == ["total_spend_30d"]
    assert outcome.metadata["null_fraction/total_spend_30d"] == pytest.approx(0.4)
    assert outcome.metadata["null_fraction/order_count_30d"] == pytest.approx(0.025)
    assert outcome.metadata["null_fraction/is_high_value"] == 0.0
    assert outcome.metadata["rows_checked"] == 200
    assert "total_spend_30d is 40.0% null (max 5.0%)" in outcome.description
    assert "| total_spend_30d | 80 | 0.4 | 0.05 | FAIL |" in outcome.metadata["report"]
    assert outcome.severity == "ERROR"
    assert all(isinstance(value, (int, float, str)) for value in outcome.metadata.values())


def test_legitimately_null_feature_passes_with_an_override():
    rows = order_rows(np.random.default_rng(2), 100)
    rows.loc[:59, "avg_order_value_30d"] = np.nan  # no order in 30 days: null by definition
    features = ["order_count_30d", "avg_order_value_30d"]
    assert check_missing_values(rows, features, CheckConfig()).failing == ["avg_order_value_30d"]
    outcome = check_missing_values(rows, features, CheckConfig(null_fraction_overrides={"avg_order_value_30d": 1.0},
                                                               severity="WARN"))
    assert outcome.passed and outcome.failing == []
    assert outcome.metadata["null_fraction/avg_order_value_30d"] == pytest.approx(0.6)
    assert outcome.metadata["null_threshold/avg_order_value_30d"] == 1.0
    assert outcome.severity == "WARN"


def test_missing_values_threshold_edge_absent_column_and_empty_frame():
    frame = pd.DataFrame({"a": [None] * 5 + list(range(95)), "b": [None] * 6 + list(range(94))})
    outcome = check_missing_values(frame, ["a", "b", "c"])
    assert outcome.failing == ["b", "c"]  # a: exactly 5% passes; b: 6%; c: absent
    assert outcome.metadata["null_fraction/c"] == 1.0
    assert "c is absent from the frame" in outcome.description

    empty = check_missing_values(frame.iloc[:0], ["a", "b"])
    assert empty.passed and empty.metadata["rows_checked"] == 0
    assert "No rows" in empty.description


# -- drift -----------------------------------------------------------------------------

def test_drift_on_stationary_data_never_fails_at_defaults():
    config = CheckConfig()
    for seed in range(50):
        rng = np.random.default_rng(seed)
        # an hour's rows against a week's; every tenth seed at the smallest judged size
        current_size, reference_size = (30, 30) if seed % 10 == 0 else (60 + seed, 1500)
        outcome = check_drift(order_rows(rng, current_size), order_rows(rng, reference_size), DRIFT_FEATURES, config)
        assert outcome.passed, f"seed {seed}: {outcome.description}"
        assert outcome.metadata["features_checked"] == 5  # last_order_date (a timestamp) is not judged
        assert "last_order_date (timestamp) is not checked" in outcome.description


def test_shifted_feature_fails_with_psi_ks_and_a_png(tmp_path):
    rng = np.random.default_rng(7)
    reference, current = order_rows(rng, 2000), order_rows(rng, 120, spend_shift_sd=3.0)
    current["is_high_value"] = order_rows(rng, 120)["is_high_value"]  # only spend moves
    outcome = check_drift(current, reference, DRIFT_FEATURES, CheckConfig(), report_dir=tmp_path / "drift")
    assert not outcome.passed
    assert outcome.failing == ["total_spend_30d"]
    assert outcome.metadata["psi/total_spend_30d"] > 0.25
    assert outcome.metadata["ks/total_spend_30d"] > 0.3
    assert outcome.metadata["mean_shift/total_spend_30d"] == pytest.approx(3.0, abs=0.4)
    assert outcome.metadata["psi/order_count_30d"] < 0.25
    assert (outcome.metadata["reference_rows"], outcome.metadata["current_rows"]) == (2000, 120)
    assert outcome.description.startswith("Drift in 1 of 5 features")
    assert "total_spend_30d: PSI" in outcome.description and "KS" in outcome.description
    assert "| total_spend_30d | decimal | 2000 | 120 |" in outcome.metadata["report"]
    for feature in ("order_count_30d", "total_spend_30d", "avg_order_value_30d", "is_high_value", "segment"):
        path = outcome.metadata[f"plot/{feature}"]
        assert path == str(tmp_path / "drift" / f"drift_{feature}.png")
        with open(path, "rb") as handle:
            assert handle.read(8) == PNG_SIGNATURE
    assert "plot/last_order_date" not in outcome.metadata

    # per-feature overrides: a looser PSI/KS/mean-shift bar, or no drift check at all
    loose = CheckConfig(drift_overrides={"total_spend_30d": DriftThresholds(psi=math.inf, ks=math.inf,
                                                                             mean_shift=math.inf)})
    assert check_drift(current, reference, DRIFT_FEATURES, loose).passed
    excluded = check_drift(current, reference, DRIFT_FEATURES, CheckConfig(drift_exclude=("total_spend_30d",)))
    assert excluded.passed and "total_spend_30d is excluded" in excluded.description


def test_shift_fails_at_the_smallest_judged_size_and_small_samples_pass_with_a_note():
    failures = 0
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        reference, current = order_rows(rng, 30), order_rows(rng, 30, spend_shift_sd=3.0)
        failures += "total_spend_30d" in check_drift(current, reference, {"total_spend_30d": "decimal"}).failing
    assert failures == 20

    rng = np.random.default_rng(3)
    reference, current = order_rows(rng, 500), order_rows(rng, 29, spend_shift_sd=10.0)
    outcome = check_drift(current, reference, DRIFT_FEATURES)
    assert outcome.passed and outcome.failing == []
    assert outcome.metadata["features_checked"] == 0
    assert "fewer than 30 non-null values" in outcome.description
    assert "total_spend_30d (29 current, 500 reference values)" in outcome.description
    assert "psi/total_spend_30d" not in outcome.metadata

    # nulls are left out: 40% nulls leave 36 values, still judged, and a null burst is not drift
    current = order_rows(rng, 60)
    current.loc[:23, "total_spend_30d"] = None
    outcome = check_drift(current, reference, {"total_spend_30d": "decimal"})
    assert outcome.passed and outcome.metadata["n_current/total_spend_30d"] == 36


def test_categorical_psi():
    rng = np.random.default_rng(11)
    reference = pd.DataFrame({"flag": rng.random(1000) < 0.3,
                              "segment": rng.choice(["new", "regular", "vip"], 1000, p=[0.3, 0.6, 0.1]),
                              "email": [f"user{i}@example.com" for i in range(1000)]})
    current = pd.DataFrame({"flag": rng.random(200) < 0.8,
                            "segment": rng.choice(["new", "regular", "vip", "churned"], 200, p=[0.1, 0.3, 0.1, 0.5]),
                            "email": [f"user{i}@example.com" for i in range(5000, 5200)]})
    outcome = check_drift(current, reference, {"flag": "bool", "segment": "string", "email": "string"})
    assert outcome.failing == ["flag", "segment"]
    # PSI over categories by hand: (c - r) * ln(c / r) summed over True/False
    r_true, c_true = reference["flag"].mean(), current["flag"].mean()
    expected = (c_true - r_true) * math.log(c_true / r_true) + (r_true - c_true) * math.log((1 - c_true) / (1 - r_true))
    assert outcome.metadata["psi/flag"] == pytest.approx(expected)
    assert outcome.metadata["psi/segment"] > 0.25  # a new category lands in "(other)"
    assert outcome.metadata["psi/email"] == 0.0  # identifiers: all new, all "(other)", no drift
    assert "ks/flag" not in outcome.metadata

    same = pd.DataFrame({"flag": rng.random(200) < 0.3,
                         "segment": rng.choice(["new", "regular", "vip"], 200, p=[0.3, 0.6, 0.1])})
    assert check_drift(same, reference, {"flag": BOOL, "segment": STRING}).passed


def test_psi_bins_are_reference_deciles_with_open_edges():
    reference = np.arange(100, dtype=float)
    edges, reference_counts, current_counts = quantile_bin_counts(reference, np.array([-50.0, 1e9, 1e9, 55.0]))
    assert len(edges) == 9 and list(reference_counts) == [10] * 10
    assert list(current_counts) == [1, 0, 0, 0, 0, 1, 0, 0, 0, 2]  # outside the range: the edge bins
    psi = population_stability_index(reference_counts, current_counts)
    by_hand = sum((max(c / 4, PSI_EPSILON) - 0.1) * math.log(max(c / 4, PSI_EPSILON) / 0.1) for c in current_counts)
    assert psi == pytest.approx(by_hand)
    assert population_stability_index(reference_counts, reference_counts) == 0.0


# -- skew ------------------------------------------------------------------------------

def skew_frames(n: int = 200):
    rng = np.random.default_rng(5)
    keys = np.arange(1000, 1000 + n)
    offline = pd.DataFrame({
        "customer_id": keys,
        "total_spend_30d": rng.gamma(2.0, 300.0, n),
        "order_count_30d": pd.array(rng.poisson(4, n), dtype="Int64"),
        "is_high_value": pd.array(rng.random(n) < 0.3, dtype="boolean"),
        "first_name": pd.array(rng.choice(["Ann", "Bo", None], n), dtype="string"),
    })
    offline.loc[::10, "total_spend_30d"] = np.nan
    online = offline.copy()
    online["total_spend_30d"] = online["total_spend_30d"].astype(object).where(online["total_spend_30d"].notna(), None)
    return online.sample(frac=1.0, random_state=1), offline  # row order does not matter


SKEW_FEATURES = ["total_spend_30d", "order_count_30d", "is_high_value", "first_name"]


def test_skew_exact_match_and_nulls_on_both_sides_are_equal():
    online, offline = skew_frames()
    outcome = check_skew(online, offline, "customer_id", SKEW_FEATURES, CheckConfig())
    assert outcome.passed, outcome.description  # NaN offline vs None online: both null
    assert outcome.metadata["mismatches"] == 0 and outcome.metadata["entities_checked"] == 200
    assert outcome.metadata["mean_rel_diff/total_spend_30d"] == 0.0
    assert "mean_rel_diff/first_name" not in outcome.metadata  # not numeric
    assert "mean_rel_diff/is_high_value" not in outcome.metadata


def test_skew_exact_mismatch_names_entity_and_feature():
    online, offline = skew_frames()
    row = online.index[online["customer_id"] == 1017][0]
    value = offline.loc[offline["customer_id"] == 1017, "total_spend_30d"].iloc[0]
    online.loc[row, "total_spend_30d"] = np.nextafter(value, math.inf)  # one ulp off
    online.loc[online["customer_id"] == 1042, "first_name"] = pd.NA  # one side null
    offline.loc[offline["customer_id"] == 1042, "first_name"] = "Ann"
    online = online[online["customer_id"] != 1099]  # no online row
    outcome = check_skew(online, offline, "customer_id", SKEW_FEATURES, CheckConfig(severity="WARN"))
    assert not outcome.passed and outcome.severity == "WARN"
    assert outcome.failing == ["total_spend_30d", "order_count_30d", "is_high_value", "first_name"]
    assert outcome.metadata["mismatches/total_spend_30d"] == 2  # 1017 and 1099
    assert outcome.metadata["mismatches/first_name"] == 2  # 1042 and 1099
    assert outcome.metadata["mismatches/order_count_30d"] == 1  # 1099
    assert outcome.metadata["mismatches"] == 6 and outcome.metadata["mismatched_entities"] == 3
    assert outcome.metadata["mismatch_rate"] == pytest.approx(6 / 800)
    mismatches = outcome.details["mismatches"]
    assert (1017, "total_spend_30d", repr(float(np.nextafter(value, math.inf))), repr(float(value))) in mismatches
    assert (1042, "first_name", "null", "Ann") in mismatches
    assert (1099, "order_count_30d", "(no row)", int(offline.loc[offline["customer_id"] == 1099, "order_count_30d"].iloc[0])) in mismatches
    assert "| 1017 | total_spend_30d |" in outcome.metadata["mismatch_sample"]
    assert "1017.total_spend_30d" in outcome.description


def test_skew_mismatch_sample_shows_the_first_twenty():
    online, offline = skew_frames()
    online["order_count_30d"] = online["order_count_30d"] + 1
    outcome = check_skew(online, offline, "customer_id", {"order_count_30d": INT})
    assert outcome.metadata["mismatches"] == 200
    assert outcome.metadata["mismatch_sample"].count("\n| 1") == 20
    assert "… and 180 more" in outcome.metadata["mismatch_sample"]


def test_skew_distributional_threshold():
    online, offline = skew_frames()
    for factor, threshold, mean_fails in [(1.05, 0.10, False), (1.2, 0.10, True), (1.2, 0.25, False)]:
        moved = online.copy()
        moved["total_spend_30d"] = pd.to_numeric(moved["total_spend_30d"]) * factor
        outcome = check_skew(moved, offline, "customer_id", ["total_spend_30d"],
                             CheckConfig(skew_mean_threshold=threshold))
        assert outcome.metadata["mean_rel_diff/total_spend_30d"] == pytest.approx(factor - 1)
        assert outcome.metadata["mismatches"] == 180  # 20 of 200 are null on both sides
        assert outcome.failing == ["total_spend_30d"]
        assert ("mean differs by" in outcome.description) == mean_fails, outcome.description

    # decimals exact on both sides: equal Decimals match; the mean check reads them as numbers
    offline_decimal = pd.DataFrame({"k": ["a", "b", "c"], "spend": [Decimal("1.10"), Decimal("2.00"), None]})
    online_decimal = pd.DataFrame({"k": ["c", "b", "a"], "spend": [None, Decimal("2.0"), Decimal("1.1")]})
    outcome = check_skew(online_decimal, offline_decimal, "k", {"spend": decimal(2)})
    assert outcome.passed and outcome.metadata["mean_offline/spend"] == pytest.approx(1.55)


def test_skew_rejects_duplicate_entities_and_fails_absent_features():
    online, offline = skew_frames(10)
    with pytest.raises(ValueError, match="the online rows hold entities more than once"):
        check_skew(pd.concat([online, online.iloc[:1]]), offline, "customer_id", SKEW_FEATURES)
    with pytest.raises(ValueError, match="no key column 'id'"):
        check_skew(online, offline, "id", SKEW_FEATURES)
    outcome = check_skew(online.drop(columns="first_name"), offline, "customer_id", SKEW_FEATURES)
    assert outcome.failing == ["first_name"] and "first_name is absent from the online rows" in outcome.description


def test_values_equal():
    assert values_equal(None, np.nan) and values_equal(pd.NA, None) and values_equal(pd.NaT, None)
    assert not values_equal(0.1 + 0.2, 0.3) and values_equal(np.float64(0.5), 0.5)
    assert not values_equal(True, 1) and values_equal(np.bool_(True), True)
    assert not values_equal("x", None) and values_equal(Decimal("1.10"), Decimal("1.1"))


def test_sample_entities_is_deterministic_and_stable():
    keys = list(range(1000))
    sample = sample_entities(keys, 200, seed=42)
    assert len(sample) == 200 and sample == sorted(sample) and len(set(sample)) == 200
    assert sample_entities(list(reversed(keys)) + keys[:10], 200, seed=42) == sample
    assert sample_entities(np.array(keys, dtype="int64"), 200, seed=42) == sample
    assert all(type(key) is int for key in sample_entities(np.array(keys), 5, seed=42))
    assert sample_entities(keys, 200, seed=43) != sample
    assert len(set(sample_entities(keys + [1000], 200, seed=42)) - set(sample)) <= 1
    assert sample_entities([3, None, 1, 2], 10, seed=0) == [1, 2, 3]
    assert sample_entities(["b", "a"], 1, seed="x") == sample_entities(["a", "b"], 1, seed="x")


# -- outcome -------------------------------------------------------------------------------

def test_outcome_as_dagster_metadata(tmp_path):
    from dagster import AssetCheckSeverity, MetadataValue

    rng = np.random.default_rng(9)
    outcome = check_drift(order_rows(rng, 100, spend_shift_sd=3.0), order_rows(rng, 400),
                          {"total_spend_30d": decimal(2)}, CheckConfig(severity="WARN"), report_dir=tmp_path)
    assert isinstance(outcome, CheckOutcome)
    values = outcome.dagster_metadata()
    assert values["report"] == MetadataValue.md(outcome.markdown)
    assert values["plot/total_spend_30d"] == MetadataValue.path(str(tmp_path / "drift_total_spend_30d.png"))
    assert values["psi/total_spend_30d"] == MetadataValue.float(outcome.metadata["psi/total_spend_30d"])
    assert values["current_rows"] == MetadataValue.int(100)
    assert outcome.dagster_severity() == AssetCheckSeverity.WARN
