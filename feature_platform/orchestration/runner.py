"""Running the deployment's Dagster definitions from the command line, in ranges of partitions.

``feature-platform materialize`` and ``materialize-incremental`` do what a UI backfill does —
the same assets, the same single-run backfill policy — in runs of up to a week of hourly
partitions each, so hundreds of partitions take a handful of runs, not one run each.
"""

from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from feature_platform.orchestration.feature_view_assets import AS_OF_TAG
from feature_platform.orchestration.partitions import partition_key_of

DEFAULT_DEFINITIONS_MODULE = "definitions"
HOURS_PER_RUN = 24 * 7


def load_definitions(module_name: str | None = None) -> dg.Definitions:
    module = importlib.import_module(module_name or os.environ.get("FP_DEFINITIONS_MODULE", DEFAULT_DEFINITIONS_MODULE))
    return module.defs


class InstanceUnavailable(RuntimeError):
    """The Dagster instance's storage cannot be opened (PostgreSQL down, say); the message says which."""


def _root_cause(error: BaseException) -> str:
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return re.sub(r"://([^:/@\s]*):[^@\s]*@", r"://\1:***@", first_line)  # never a password from a URL


def open_instance() -> tuple[dg.DagsterInstance, str]:
    """The Dagster instance runs are recorded in, and a sentence saying which."""
    if os.environ.get("DAGSTER_HOME"):
        where = f"DAGSTER_HOME={os.environ['DAGSTER_HOME']}"
        try:
            # dagster-postgres retries a refused connection for a few seconds, then raises from
            # deep inside the storage classes: one sentence naming the instance is what a user needs.
            return dg.DagsterInstance.get(), where
        except Exception as error:  # noqa: BLE001 - any storage failure ends the command the same way
            raise InstanceUnavailable(f"the Dagster instance ({where}, dagster.yaml) cannot open its storage: "
                                      f"{_root_cause(error)}") from None
    local = Path.cwd() / ".dagster_home"
    if (local / "dagster.yaml").exists():
        return dg.DagsterInstance.from_config(str(local)), f"{local} (the instance scripts/dev uses)"
    return dg.DagsterInstance.ephemeral(), "an ephemeral instance (set DAGSTER_HOME to record runs)"


@dataclass(frozen=True)
class RangeRun:
    first_key: str
    last_key: str
    hours: int


def plan_ranges(start: datetime, end: datetime, hours_per_run: int = HOURS_PER_RUN) -> list[RangeRun]:
    """Hourly partitions whose hour starts in [start, end), in runs of at most ``hours_per_run``."""
    first = start.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)
    hours = []
    moment = first
    while moment < end:
        hours.append(moment)
        moment += timedelta(hours=1)
    runs = []
    for index in range(0, len(hours), hours_per_run):
        chunk = hours[index:index + hours_per_run]
        runs.append(RangeRun(partition_key_of(chunk[0]), partition_key_of(chunk[-1]), len(chunk)))
    return runs


def run_range(defs: dg.Definitions, instance: dg.DagsterInstance, run: RangeRun, as_of: datetime,
              selection: list[dg.AssetKey] | None = None) -> dg.ExecuteInProcessResult:
    job = defs.resolve_implicit_global_asset_job_def()
    tags = {
        ASSET_PARTITION_RANGE_START_TAG: run.first_key,
        ASSET_PARTITION_RANGE_END_TAG: run.last_key,
        AS_OF_TAG: as_of.astimezone(timezone.utc).isoformat(),
        "feature_platform/launched_by": "cli",
    }
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}  # the CLI shows a progress bar instead
    return job.execute_in_process(run_config=quiet, instance=instance, tags=tags, asset_selection=selection,
                                  raise_on_error=False)
