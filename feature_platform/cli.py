"""The ``feature-platform`` command line: one click group, one subcommand per job.

Add a job by writing another ``@main.command("name")`` function here. Import heavy modules
inside the function, so ``feature-platform --help`` stays fast and one broken command does
not break the others.
"""

from __future__ import annotations

import itertools
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import click

from feature_platform.config import (DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_ENTITIES, DEFAULT_SERVER_HOST,
                                     DEFAULT_SERVER_PORT)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Feature platform: CDC in, exact point-in-time history offline, Redis online."""


def default_landing_root() -> Path:
    """The landing zone named by the settings (FP_LANDING_URI, else FP_DATA_DIR/landing)."""
    from feature_platform.config import Settings

    uri = Settings.from_env().landing_uri
    if uri.startswith("file://"):
        return Path(uri[len("file://"):])
    if "://" in uri:
        raise click.UsageError(f"FP_LANDING_URI={uri!r} is not a local folder; pass --root")
    return Path(uri)


def _parse_utc(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an ISO-8601 time (e.g. 2026-03-01T12:00:00Z)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _holds_files(root: Path) -> bool:
    return root.is_dir() and any(path.is_file() for path in root.rglob("*"))


def _describe_batch(root: Path, files: list[Path]) -> str:
    names = ", ".join(str(path.relative_to(root)) for path in files)
    return f"{len(files)} file(s): {names}" if files else "nothing to land"


@main.command("demo-data")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Landing zone to write. Default: FP_LANDING_URI, else FP_DATA_DIR/landing.")
@click.option("--customers", type=click.IntRange(min=1), default=200, show_default=True,
              help="Customers in the initial snapshot.")
@click.option("--products", type=click.IntRange(min=2), default=50, show_default=True)
@click.option("--weeks", type=click.FloatRange(min=0, min_open=True), default=4, show_default=True,
              help="Weeks of history before --end.")
@click.option("--orders-per-day", type=click.FloatRange(min=0), default=60, show_default=True,
              help="The scale: 36000 over 4 weeks gives about a million order events.")
@click.option("--seed", type=int, default=7, show_default=True, help="Same seed and --end, same files.")
@click.option("--end", "end_text", default=None, metavar="ISO-TIME",
              help="Time of the last commit, UTC. Default: now.")
@click.option("--if-absent", is_flag=True, help="Leave the root alone if it already holds files.")
@click.option("--late-hours", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Also land one late batch of orders committed this many hours ago.")
@click.option("--live", is_flag=True, help="Then append a batch of fresh commits every --interval seconds.")
@click.option("--interval", type=click.FloatRange(min=0), default=30, show_default=True,
              help="Seconds between live batches.")
@click.option("--batches", type=click.IntRange(min=1), default=None,
              help="Stop --live after this many batches. Default: run until interrupted.")
def demo_data(root: Path | None, customers: int, products: int, weeks: float, orders_per_day: float, seed: int,
              end_text: str | None, if_absent: bool, late_hours: float | None, live: bool, interval: float,
              batches: int | None) -> None:
    """Write a demo Debezium landing zone for the inventory database, and keep it live if asked."""
    from feature_platform.demo.generator import append_late_batch, append_live_batch, generate_landing_zone

    root = root or default_landing_root()
    end = _parse_utc(end_text)
    if _holds_files(root):
        if if_absent:
            click.echo(f"{root} already holds files; left as it is.")
        elif not (live or late_hours):
            raise click.ClickException(
                f"{root} already holds files. Pass --if-absent to keep them, --live or --late-hours "
                "to append to them, or delete the folder to start over.")
    else:
        summary = generate_landing_zone(root, customers=customers, products=products, weeks=weeks,
                                        orders_per_day=orders_per_day, seed=seed, end=end)
        click.echo(summary.describe())

    try:
        if late_hours:
            files = append_late_batch(root, age=timedelta(hours=late_hours))
            click.echo(f"late batch (committed {late_hours:g} h ago): {_describe_batch(root, files)}")
        if live:
            numbers = itertools.count(1) if batches is None else range(1, batches + 1)
            for number in numbers:
                time.sleep(interval)
                files = append_live_batch(root)
                click.echo(f"batch {number} at {datetime.now(timezone.utc):%H:%M:%S}: {_describe_batch(root, files)}")
    except FileNotFoundError as error:  # a root with files this generator did not write
        raise click.ClickException(str(error)) from None
    except KeyboardInterrupt:
        click.echo("stopped")



# -- materializing ---------------------------------------------------------------------------

def _materialize_ranges(start: datetime, end: datetime, hours_per_run: int) -> None:
    from feature_platform.orchestration.runner import (
        InstanceUnavailable,
        load_definitions,
        open_instance,
        plan_ranges,
        run_range,
    )

    defs = load_definitions()
    try:
        instance, where = open_instance()
    except InstanceUnavailable as error:
        raise click.ClickException(str(error)) from None
    runs = plan_ranges(start, end, hours_per_run)
    if not runs:
        click.echo("nothing to materialize: the range is empty")
        return
    click.echo(f"materializing {sum(r.hours for r in runs)} hourly partition(s) up to {end.isoformat()} "
               f"in {len(runs)} run(s); runs recorded in {where}")
    failed = []
    with click.progressbar(runs, label="partitions", item_show_func=lambda r: r and f"{r.first_key} .. {r.last_key}") as bar:
        for run in bar:
            result = run_range(defs, instance, run, as_of=end)
            if not result.success:
                failed.append((run, result))
    for run, result in failed:
        errors = [event.message for event in result.all_events if event.is_failure]
        click.echo(f"run {result.run_id} ({run.first_key} .. {run.last_key}) failed: {errors[-1] if errors else ''}",
                   err=True)
    if failed:
        raise SystemExit(1)
    click.echo("done")


@main.command("materialize")
@click.option("--start", required=True, help="First hour to materialize (ISO-8601, UTC if no zone).")
@click.option("--end", required=True, help="End of the range (exclusive); inside an hour: values up to that instant.")
@click.option("--hours-per-run", type=click.IntRange(min=1), default=24 * 7, show_default=True)
def materialize(start: str, end: str, hours_per_run: int) -> None:
    """Backfill every asset over a range of hourly partitions, with the same Dagster definitions."""
    start_at, end_at = _parse_utc(start), _parse_utc(end)
    if end_at <= start_at:
        raise click.BadParameter("--end must be after --start")
    _materialize_ranges(start_at, end_at, hours_per_run)


@main.command("materialize-incremental")
@click.option("--end", default=None, help="Materialize up to this instant (default: now).")
@click.option("--hours-per-run", type=click.IntRange(min=1), default=24 * 7, show_default=True)
def materialize_incremental(end: str | None, hours_per_run: int) -> None:
    """Decode new landing batches, then materialize every partition they touch and every one not done yet, up to --end."""
    from feature_platform.cdc.change_log import ChangeLog, parse_hour
    from feature_platform.config import Settings
    from feature_platform.offline_store import OfflineFeatureStore
    from feature_platform.registry import Registry
    from feature_platform.storage import Store

    settings = Settings.from_env()
    end_at = _parse_utc(end) or datetime.now(timezone.utc)
    offline, landing = Store(settings.project_offline_root), Store(settings.landing_uri)
    registry = Registry.from_module()
    first = settings.partitions_start
    candidates = []
    for table in {view.source.name: view.source for view in registry.views.values()}.values():
        for staged in ChangeLog(offline, table).stage_pending(landing):
            candidates.extend(parse_hour(hour) for hour in staged.hours)  # late batches reach back
    history = OfflineFeatureStore(offline)
    for view in registry.views.values():
        horizon = history.horizon(view, first)
        candidates.append(first if horizon is None else horizon.replace(minute=0, second=0, microsecond=0))
    start_at = max(first, min(candidates)) if candidates else first
    _materialize_ranges(start_at, end_at, hours_per_run)


# -- reading features --------------------------------------------------------------------------

def _references(features: str | None, service: str | None) -> dict:
    if (features is None) == (service is None):
        raise click.UsageError("pass exactly one of --features view:feature,... or --service NAME")
    return {"service": service} if service else {"features": [f.strip() for f in features.split(",") if f.strip()]}


@main.command("get-historical")
@click.option("--entity-df", "entity_df_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CSV or Parquet with the join keys and event_timestamp (ISO-8601 with zone).")
@click.option("--features", default=None, help="Comma-separated view:feature references.")
@click.option("--service", default=None, help="A feature service name.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="CSV or Parquet to write.")
@click.option("--full-feature-names", is_flag=True, help="Name columns view__feature.")
def get_historical(entity_df_path: Path, features: str | None, service: str | None, out: Path,
                   full_feature_names: bool) -> None:
    """Point-in-time correct feature values for every entity row (training data)."""
    import pandas as pd

    from feature_platform.feature_store import FeatureStore

    reader = pd.read_parquet if entity_df_path.suffix == ".parquet" else pd.read_csv
    entity_df = reader(entity_df_path)
    try:
        result = FeatureStore.from_env().get_historical_features(
            entity_df, full_feature_names=full_feature_names, **_references(features, service))
    except (KeyError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    if out.suffix == ".parquet":
        result.to_parquet(out, index=False)
    else:
        frame = result.copy()
        frame["event_timestamp"] = frame["event_timestamp"].map(lambda t: t.isoformat())
        frame.to_csv(out, index=False)
    click.echo(f"wrote {len(result)} row(s) x {len(result.columns)} column(s) to {out}")


def _parse_entity(text: str) -> tuple[str, object]:
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise click.BadParameter(f"{text!r} must look like customer_id=1001")
    try:
        return key, int(value)
    except ValueError:
        return key, value


@main.command("get-online")
@click.option("--features", default=None, help="Comma-separated view:feature references.")
@click.option("--service", default=None, help="A feature service name.")
@click.option("--entity", "entities", multiple=True, required=True, help="join_key=value; repeat for more rows.")
@click.option("--request-time", default=None, help="Serve as of this instant (default now): staleness and on-demand features.")
@click.option("--full-feature-names", is_flag=True)
def get_online(features: str | None, service: str | None, entities: tuple[str, ...], request_time: str | None,
               full_feature_names: bool) -> None:
    """Latest feature values from Redis, one JSON object per entity row."""
    import json

    import pandas as pd

    from feature_platform.feature_store import FeatureStore

    rows: list[dict] = []
    for text in entities:
        key, value = _parse_entity(text)
        if not rows or key in rows[-1]:
            rows.append({})
        rows[-1][key] = value
    try:
        result = FeatureStore.from_env().get_online_features(
            rows, request_time=_parse_utc(request_time), full_feature_names=full_feature_names,
            **_references(features, service))
    except (KeyError, ValueError, RuntimeError) as error:
        raise click.ClickException(str(error)) from None

    def plain(value):
        if value is None or value is pd.NA or (isinstance(value, float) and value != value):
            return None
        if isinstance(value, pd.Timestamp):
            return value.isoformat()
        return value.item() if hasattr(value, "item") else value

    records = [{column: plain(value) for column, value in record.items()} for record in result.astype(object).to_dict("records")]
    click.echo(json.dumps(records, indent=2, default=str))
    if result.stale:
        click.echo(f"stale views (served as null): {', '.join(result.stale)}", err=True)


@main.command("serve")
@click.option("--host", default=DEFAULT_SERVER_HOST, show_default=True,
              help="Interface to listen on. Loopback by default; 0.0.0.0 exposes the server to the network.")
@click.option("--port", type=click.IntRange(min=1, max=65535), default=DEFAULT_SERVER_PORT, show_default=True,
              help="Port to listen on (6566 is Feast's feature server port).")
@click.option("--max-entities", type=click.IntRange(min=1), default=DEFAULT_MAX_ENTITIES, show_default=True,
              help="Most entities one request may ask for; more are refused with 413.")
@click.option("--max-body-bytes", type=click.IntRange(min=1), default=DEFAULT_MAX_BODY_BYTES, show_default=True,
              help="Largest request body in bytes (default 1 MiB); a larger one is refused with 413 before "
                   "it is parsed.")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              default="info", show_default=True)
def serve(host: str, port: int, max_entities: int, max_body_bytes: int, log_level: str) -> None:
    """Serve online features over HTTP from Redis: Feast's POST /get-online-features, and /health."""
    from feature_platform.feature_store import FeatureStore
    from feature_platform.server import serve as run_server

    try:
        store = FeatureStore.from_env()
    except (ValueError, ImportError) as error:
        raise click.ClickException(str(error)) from None
    if not store.settings.redis_url:
        raise click.ClickException("FP_REDIS_URL is not set: the feature server reads Redis "
                                   "(scripts/dev starts one and sets it)")
    click.echo(f"feature server on http://{host}:{port} (OpenAPI at /openapi.json)")
    run_server(host, port, store=store, max_entities=max_entities, max_body_bytes=max_body_bytes,
               log_level=log_level)



# -- discovery ----------------------------------------------------------------------------------

@main.command("catalog")
@click.argument("term", required=False)
@click.option("--entity", default=None, help="Only features of this entity (name or join key).")
@click.option("--tag", default=None, help="Only views with this tag (key or key=value).")
@click.option("--owner", default=None, help="Only views owned by this owner (substring).")
@click.option("--show", "show", default=None, metavar="VIEW:FEATURE",
              help="Show one feature: definition, sources, services, last materialization, checks.")
def catalog(term: str | None, entity: str | None, tag: str | None, owner: str | None, show: str | None) -> None:
    """List and search features by name, entity, tag or owner; or --show one in full."""
    from feature_platform.catalog import feature_entries, search
    from feature_platform.registry import Registry, UnknownFeatureError

    registry = Registry.from_module()
    if show is None:
        entries = search(registry, term, entity=entity, tag=tag, owner=owner)
        if not entries:
            click.echo("no feature matches")
            return
        width = max(len(e.reference) for e in entries)
        for entry in entries:
            click.echo(f"{entry.reference:<{width}}  {entry.dtype:<14} {entry.kind:<11} {entry.description or entry.how}")
        return
    try:
        [(view, name)] = registry.resolve([show])
    except UnknownFeatureError as error:
        raise click.ClickException(str(error)) from None
    [entry] = [e for e in feature_entries(view) if e.name == name]
    services = [s.name for s in registry.services.values() if show in s.features]
    click.echo(f"{entry.reference}  ({entry.dtype}, {entry.kind})")
    click.echo(f"  description : {entry.description or '-'}")
    click.echo(f"  computed as : {entry.how}")
    click.echo(f"  entity      : {view.entity.name} (join key {view.entity.join_key})")
    click.echo(f"  source      : {view.source.name} columns {', '.join(view.source_columns_of(name)) or '-'} "
               f"(topic {view.source.topic})")
    click.echo(f"  owners      : {', '.join(view.owners) or '-'}   tags: {view.tags}   ttl: {view.ttl}")
    click.echo(f"  services    : {', '.join(services) or 'none'}")
    click.echo(f"  code version: {view.code_version()}")
    _print_asset_status(view)


def _print_asset_status(view) -> None:
    """Last materialization and check results of the view's assets, from the Dagster instance."""
    import dagster as dg

    from feature_platform.orchestration.runner import open_instance

    instance, where = open_instance()
    for key in (dg.AssetKey(["features", view.name]), dg.AssetKey(["online", view.name])):
        event = instance.get_latest_materialization_event(key)
        when = "never" if event is None else (
            f"{datetime.fromtimestamp(event.timestamp, timezone.utc):%Y-%m-%d %H:%M:%S}Z"
            f" (partition {event.asset_materialization.partition})")
        click.echo(f"  {key.to_user_string():<28} last materialized: {when}")
        checks = instance.event_log_storage.get_asset_check_summary_records(
            [dg.AssetCheckKey(key, name) for name in ("missing_values", "drift", "train_serve_skew")])
        for check_key, record in checks.items():
            execution = record.last_check_execution_record
            if execution is not None:
                click.echo(f"    check {check_key.name}: {execution.status.value}")
    click.echo(f"  (status from {where})")


if __name__ == "__main__":
    main()
