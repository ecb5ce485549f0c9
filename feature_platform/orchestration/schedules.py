"""The hourly schedule: once an hour is over, materialize it for every partitioned asset."""


from datetime import timedelta

import dagster as dg

from feature_platform.orchestration.partitions import partition_key_of


def build_hourly_schedule(job, minute_of_hour: int = 5,
                          name: str = "hourly_materialization") -> dg.ScheduleDefinition:
    @dg.schedule(
        name=name,
        job=job,
        cron_schedule=f"{minute_of_hour} * * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Completes the hour that just ended: its last batches are in by now.",
    )
    def hourly(context: dg.ScheduleEvaluationContext):
        scheduled = context.scheduled_execution_time
        last_complete_hour = scheduled.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
        key = partition_key_of(last_complete_hour)
        return dg.RunRequest(run_key=f"hourly:{key}", partition_key=key)

    return hourly
