"""Data-quality checks of feature views: missing values, drift, online/offline skew.

Plain functions over pandas frames, each returning a ``CheckOutcome`` (pass/fail, numeric
metadata, failing features, a description, the configured severity); the Dagster asset checks
wrap them. Great Expectations, SciPy and matplotlib are imported only when a check runs.
"""

from feature_platform.checks.config import CheckConfig, CheckConfigError, DriftThresholds
from feature_platform.checks.drift import check_drift
from feature_platform.checks.missing_values import check_missing_values
from feature_platform.checks.report import CheckOutcome, feature_kind
from feature_platform.checks.skew import check_skew, sample_entities, values_equal

__all__ = [
    "CheckConfig", "CheckConfigError", "CheckOutcome", "DriftThresholds", "check_drift", "check_missing_values",
    "check_skew", "feature_kind", "sample_entities", "values_equal",
]
