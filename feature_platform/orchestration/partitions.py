"""The one partitioning scheme of the platform: hours of commit time, in UTC."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import dagster as dg

PARTITION_KEY_FORMAT = "%Y-%m-%d-%H:%M"  # Dagster's default for hourly partitions


def hourly_partitions(start: datetime) -> dg.HourlyPartitionsDefinition:
    # end_offset=1 makes the current, still incomplete hour a partition too: sensor runs
    # fill it as batches arrive, and the hourly schedule completes it once the hour is over.
    return dg.HourlyPartitionsDefinition(
        start_date=start.astimezone(timezone.utc).replace(tzinfo=None),
        timezone="UTC",
        end_offset=1,
    )


def partition_start(partition_key: str) -> datetime:
    return datetime.strptime(partition_key, PARTITION_KEY_FORMAT).replace(tzinfo=timezone.utc)


def partition_key_of(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime(PARTITION_KEY_FORMAT)


def hours_between(start: datetime, end: datetime) -> list[datetime]:
    hours, moment = [], start
    while moment < end:
        hours.append(moment)
        moment += timedelta(hours=1)
    return hours


def contiguous_ranges(keys: list[str]) -> list[tuple[str, str]]:
    """Group hourly partition keys into runs of consecutive hours: [(first, last), ...]."""
    ranges: list[tuple[str, str]] = []
    for key in sorted(set(keys)):
        if ranges and partition_start(key) - partition_start(ranges[-1][1]) == timedelta(hours=1):
            ranges[-1] = (ranges[-1][0], key)
        else:
            ranges.append((key, key))
    return ranges
