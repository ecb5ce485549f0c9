"""Missing values: the null fraction of each feature, checked with Great Expectations.

Each feature gets ``ExpectColumnProportionOfNonNullValuesToBeBetween(min_value=1 - threshold)``,
validated on an ephemeral GX context (``batch.validate``; nothing is written to disk).
GX is imported inside the check: the import alone takes seconds.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import pandas as pd

from feature_platform.checks.config import CheckConfig
from feature_platform.checks.report import REPORT_KEY, CheckOutcome, markdown_table


def check_missing_values(frame: pd.DataFrame, features: Mapping[str, Any] | Iterable[str],
                         config: CheckConfig = CheckConfig()) -> CheckOutcome:
    """Fail the features whose null fraction in ``frame`` exceeds their threshold.

    ``features`` is ``{name: DType or kind}`` (``view.stored_dtypes()``) or a list of names;
    only the names matter here. A feature absent from ``frame`` fails as all null.
    Metadata: ``rows_checked``, ``null_fraction/<feature>``, ``null_threshold/<feature>``,
    ``report`` (markdown).
    """
    names = list(dict.fromkeys(features))
    rows = len(frame)
    metadata: dict[str, float | int | str] = {"rows_checked": rows}
    if rows == 0:
        metadata[REPORT_KEY] = "No rows to check."
        return CheckOutcome(True, metadata, [], "No rows in this partition: nothing to check for missing values.",
                            config.severity)

    absent = [name for name in names if name not in frame.columns]
    present = [name for name in names if name in frame.columns]
    observed = _gx_non_null_proportions(frame[present], {name: config.null_threshold(name) for name in present})

    table_rows, failing, problems = [], [], []
    for name in names:
        threshold = config.null_threshold(name)
        if name in absent:
            null_fraction, passed = 1.0, False
        else:
            non_null, passed = observed[name]
            null_fraction = max(0.0, 1.0 - non_null)
        metadata[f"null_fraction/{name}"] = null_fraction
        metadata[f"null_threshold/{name}"] = float(threshold)
        status = "ok" if passed else ("FAIL: column absent" if name in absent else "FAIL")
        table_rows.append([name, round(null_fraction * rows), null_fraction, threshold, status])
        if not passed:
            failing.append(name)
            problems.append(f"{name} is absent from the frame" if name in absent else
                            f"{name} is {null_fraction:.1%} null (max {threshold:.1%})")
    metadata[REPORT_KEY] = markdown_table(["feature", "nulls", "null fraction", "max allowed", "status"], table_rows)
    if failing:
        description = f"Too many missing values in {len(failing)} of {len(names)} features over {rows} rows: " \
                      + "; ".join(problems) + "."
    else:
        description = f"Every feature's null fraction is within its threshold over {rows} rows."
    return CheckOutcome(not failing, metadata, failing, description, config.severity)


def _gx_non_null_proportions(frame: pd.DataFrame, thresholds: dict[str, float]) -> dict[str, tuple[float, bool]]:
    """{column: (GX's observed non-null proportion, GX's verdict)} for a non-empty frame."""
    if not thresholds:
        return {}
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch = (context.data_sources.add_pandas("feature_checks")
             .add_dataframe_asset("partition")
             .add_batch_definition_whole_dataframe("whole")
             .get_batch(batch_parameters={"dataframe": frame.reset_index(drop=True)}))
    suite = gx.ExpectationSuite(name="missing_values")
    for column, threshold in thresholds.items():
        suite.add_expectation(gxe.ExpectColumnProportionOfNonNullValuesToBeBetween(
            column=column, min_value=1.0 - threshold, max_value=1.0))
    validation = batch.validate(suite)
    results: dict[str, tuple[float, bool]] = {}
    for result in validation.results:
        column = result.expectation_config.kwargs["column"]
        exception = result.exception_info or {}
        if exception.get("raised_exception"):
            raise RuntimeError(f"Great Expectations could not check {column!r}: {exception.get('exception_message')}")
        results[column] = (float(result.result["observed_value"]), bool(result.success))
    return results
