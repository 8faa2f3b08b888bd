"""`motorwatch replay LOG...`: publish historical logs to sensor.readings in event-time order."""

from __future__ import annotations

from pathlib import Path

import click

from motorwatch.config import BusConfig, bus_options, profile_option, registry_option

SHOW_BAD_ROWS = 20  # bad rows printed one by one; the rest are only counted


def _speed(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from ingest.replay import parse_speed

    try:
        parse_speed(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


@click.command()
@click.argument("logs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "parquet", "cmapss"]),
    default=None,
    help="Log format (default: from the file suffix; .txt is C-MAPSS).",
)
@profile_option
@click.option(
    "--speed",
    default="max",
    show_default=True,
    callback=_speed,
    help="'max', or a factor of real time relative to event time (60: one hour a minute).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Back-test: replay, features and scoring in this process; one row per score to this "
    ".csv/.parquet file (asset_id, ts, risk, rul, alert_state, priority, model_version).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Back-test: processes to score in, each taking the assets of some partitions "
    "(default: one per core). The output is the same with any number.",
)
@registry_option
@bus_options
def cli(
    logs: tuple[Path, ...],
    fmt: str | None,
    profile: str,
    speed: str,
    out: Path | None,
    workers: int | None,
    registry: Path,
    bus: BusConfig,
) -> None:
    """Replay LOGs (CSV, Parquet, C-MAPSS text, or a simulator log directory) onto sensor.readings,
    or score them offline with --out."""
    from ingest.profiles import load_profile

    try:
        prof = load_profile(profile)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--profile") from None
    shown = 0

    def report(row) -> None:
        nonlocal shown
        shown += 1
        if shown <= SHOW_BAD_ROWS:
            click.echo(f"skipped {row}", err=True)

    if out is not None:
        if bus.kind != "inproc" or speed != "max":
            raise click.UsageError(
                "--out scores offline on the in-process bus at max speed: drop --bus/--speed"
            )
        _score_offline(list(logs), prof, registry, out, fmt, workers, report)
    elif workers is not None:
        raise click.UsageError("--workers is for a back-test (--out)")
    else:
        _publish(list(logs), prof, speed, fmt, bus, report)
    if shown > SHOW_BAD_ROWS:
        click.echo(f"... and {shown - SHOW_BAD_ROWS} more bad rows", err=True)


def _skipped(skipped: dict[str, int]) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in sorted(skipped.items())) or "none"


def _score_offline(
    logs: list[Path], prof, registry: Path, out: Path, fmt: str | None, workers: int | None, report
) -> None:
    from motorwatch.offline import score_logs
    from scoring.worker import ModelUnavailable

    try:
        result = score_logs(logs, prof, registry, out, fmt=fmt, on_bad_row=report, workers=workers)
    except (ModelUnavailable, ValueError) as exc:  # NoModelError included
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"scored {result.replay.published} readings into {result.scores} scores ({result.alerts} alert "
        f"changes) in {out} ({result.processes} processes); skipped rows: {_skipped(result.replay.skipped)}; "
        f"dead letters: {_skipped(result.dead_letters)}"
    )


def _publish(logs: list[Path], prof, speed: str, fmt: str | None, bus: BusConfig, report) -> None:
    from ingest import topics
    from ingest.replay import replay

    topic = bus.topic(topics.READINGS)
    b = bus.build()
    try:
        b.create_topics([topic], bus.partitions)
        producer = b.producer()
        try:
            result = replay(logs, prof, producer, speed=speed, fmt=fmt, on_bad_row=report, topic=topic)
        except ValueError as exc:  # a log the profile cannot read (missing column, unknown format)
            raise click.ClickException(str(exc)) from None
        finally:
            producer.close()
    finally:
        b.close()
    click.echo(
        f"published {result.published} readings to {topic} (event time {result.first_ts:g} .. "
        f"{result.last_ts:g} {prof.time_unit}); skipped rows: {_skipped(result.skipped)}"
    )
