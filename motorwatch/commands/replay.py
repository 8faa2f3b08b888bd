"""`motorwatch replay LOG...`: publish historical logs to sensor.readings in event-time order."""

from __future__ import annotations

from pathlib import Path

import click

from motorwatch.config import BusConfig, bus_options, profile_option

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
    help="Score the log offline into this CSV/Parquet file instead of publishing.",
)
@bus_options
def cli(
    logs: tuple[Path, ...], fmt: str | None, profile: str, speed: str, out: Path | None, bus: BusConfig
) -> None:
    """Replay LOGs (CSV, Parquet, C-MAPSS text, or a simulator log directory) onto sensor.readings."""
    from ingest import topics
    from ingest.profiles import load_profile
    from ingest.replay import replay

    if out is not None:
        raise click.ClickException(
            "offline scoring needs the feature worker and the scorer wired into replay "
            "(issue 7, demo wiring): not built yet; replay onto a bus and run `motorwatch features` "
            "and `motorwatch score` meanwhile."
        )
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

    b = bus.build()
    try:
        b.create_topics([topics.READINGS], bus.partitions)
        producer = b.producer()
        try:
            result = replay(list(logs), prof, producer, speed=speed, fmt=fmt, on_bad_row=report)
        except ValueError as exc:  # a log the profile cannot read (missing column, unknown format)
            raise click.ClickException(str(exc)) from None
        finally:
            producer.close()
    finally:
        b.close()
    if shown > SHOW_BAD_ROWS:
        click.echo(f"... and {shown - SHOW_BAD_ROWS} more bad rows", err=True)
    skipped = ", ".join(f"{reason} {n}" for reason, n in sorted(result.skipped.items())) or "none"
    click.echo(
        f"published {result.published} readings to {topics.READINGS} "
        f"(event time {result.first_ts:g} .. {result.last_ts:g} {prof.time_unit}); skipped rows: {skipped}"
    )
