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


if __name__ == "__main__":
    main()
