"""`motorwatch simulate`: a fleet of motors to log files (Parquet/CSV with ground truth) or to the bus."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from motorwatch.config import BusConfig, bus_options


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    from simulator.config import parse_duration

    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _start(ctx: click.Context, param: click.Parameter, value: str) -> float:
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"not an ISO date/time: {value!r} (e.g. 2026-01-01T00:00:00Z)") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


@click.command()
@click.option("--motors", type=click.IntRange(1, 99_999), default=50, show_default=True, help="Fleet size.")
@click.option(
    "--days", type=float, default=None, help="Simulated days [default: 7 to files; unbounded on the bus]."
)
@click.option(
    "--interval",
    default="1s",
    show_default=True,
    callback=_duration,
    help="Reading interval (500ms, 1s, 60s, 1m).",
)
@click.option(
    "--seed",
    type=int,
    default=7,
    show_default=True,
    help="Same seed and options: same output, byte for byte.",
)
@click.option(
    "--start",
    default="2026-01-01T00:00:00Z",
    show_default=True,
    callback=_start,
    help="Event time of the first tick.",
)
@click.option(
    "--mean-onset-days",
    type=float,
    default=60.0,
    show_default=True,
    help="Mean running days from a repair to the start of the next failure's precursor.",
)
@click.option(
    "--stagger/--aligned",
    default=False,
    show_default=True,
    help="Motors sample in turn over each interval (a polling gateway), or all at its start.",
)
@click.option("--no-faults", is_flag=True, help="No sensor or transport faults (a clean log).")
@click.option(
    "--fault",
    "fault_rates",
    multiple=True,
    metavar="KIND=RATE",
    help="Per-reading fault rate: dropout, duplicate, out_of_order, late, nan, spike, stuck, clock_skew.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write readings, ground truth and fleet.json here (with --bus kafka: also publish).",
)
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv"]), default="parquet", show_default=True)
@click.option(
    "--speed",
    default="realtime",
    show_default=True,
    help="On the bus: 'realtime', 'max', or a factor of real time.",
)
@click.option(
    "--duration", default=None, callback=_duration, help="On the bus: stop after this wall-clock time."
)
@click.option(
    "--closed-loop/--open-loop",
    default=True,
    show_default=True,
    help="On the bus: perform the jobs planned on maintenance.schedule.",
)
@click.option("--progress/--no-progress", default=None, help="Progress bar [default: when on a terminal].")
@bus_options
def cli(
    motors: int,
    days: float | None,
    interval: float,
    seed: int,
    start: float,
    mean_onset_days: float,
    stagger: bool,
    no_faults: bool,
    fault_rates: tuple[str, ...],
    out: Path | None,
    fmt: str,
    speed: str,
    duration: float | None,
    closed_loop: bool,
    progress: bool | None,
    bus: BusConfig,
) -> None:
    """Simulate a fleet of motors that degrade, fail and get repaired, with sensor faults.

    To files:  motorwatch simulate --motors 200 --days 180 --interval 60s --seed 7 --out logs/

    To Kafka:  motorwatch simulate --bootstrap 127.0.0.1:9092 --speed 60 --duration 10m
    """
    from simulator.config import FaultRates, FleetConfig

    faults = FaultRates.none() if no_faults else FaultRates()
    try:
        rates = dict(_rate(text) for text in fault_rates)
        config = FleetConfig(
            motors=motors,
            interval_s=interval,
            start_ts=start,
            mean_onset_days=mean_onset_days,
            faults=faults.with_rates(**rates),
            stagger=stagger,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if out is not None and bus.kind == "inproc":
        _to_files(config, seed, out, fmt, days if days is not None else 7.0, progress)
    else:
        _to_bus(config, seed, bus, out, fmt, days, speed, duration, closed_loop, progress)


def _rate(text: str) -> tuple[str, float]:
    kind, _, rate = text.partition("=")
    try:
        return kind.strip(), float(rate)
    except ValueError:
        raise ValueError(f"--fault {text!r}: expected KIND=RATE, e.g. nan=0.001") from None


def _progress_bar(show: bool | None):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
        disable=not show if show is not None else None,
        transient=False,
    )


def _to_files(config, seed: int, out: Path, fmt: str, days: float, progress: bool | None) -> None:
    from simulator.writers import simulate_to_files

    with _progress_bar(progress) as bar:
        task = bar.add_task("simulating", total=config.ticks(days * 86400.0), info="ticks")
        summary = simulate_to_files(
            config,
            seed,
            out,
            days * 86400.0,
            fmt,
            on_progress=lambda done, total: bar.update(task, completed=done),
        )
    click.echo(_summary_line(summary.readings, summary.events, summary.seconds))
    click.echo(f"wrote {out}/readings.{fmt}, {out}/events.{fmt}, {out}/fleet.json")


def _summary_line(readings: int, events: dict[str, int], seconds: float) -> str:
    kinds = ", ".join(f"{events.get(k, 0)} {k}" for k in ("failure", "onset", "maintenance", "sensor_fault"))
    return f"{readings:,} readings in {seconds:.1f} s ({readings / max(seconds, 1e-9):,.0f}/s); {kinds}"


def _to_bus(
    config, seed, bus_config: BusConfig, out, fmt, days, speed, duration, closed_loop, progress
) -> None:
    import threading
    import time

    from ingest import topics
    from simulator.fleet import Fleet
    from simulator.publish import MaintenanceListener, Pacing, Publisher
    from simulator.writers import LogWriter

    try:
        pacing = Pacing.parse(speed)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--speed") from None
    fleet = Fleet(config, seed)
    end_ts = None if days is None else config.start_ts + days * 86400.0
    bus = bus_config.build()
    stop = threading.Event()
    log = LogWriter(out, fleet.asset_ids, fmt) if out is not None else None
    timer = threading.Timer(duration or 0.0, stop.set)
    started = time.monotonic()
    try:
        bus.create_topics([bus_config.topic(t) for t in topics.ALL], bus_config.partitions)
        publisher = Publisher(
            fleet,
            bus.producer(),
            pacing,
            end_ts=end_ts,
            log=log,
            readings_topic=bus_config.topic(topics.READINGS),
            maintenance_topic=bus_config.topic(topics.MAINTENANCE),
        )
        listener = (
            MaintenanceListener(fleet, bus, topic=bus_config.topic(topics.SCHEDULE)) if closed_loop else None
        )
        if duration is not None:
            timer.start()
        with _progress_bar(progress) as bar:
            total = None if end_ts is None else config.ticks(end_ts - config.start_ts)
            task = bar.add_task("publishing", total=total, info="")

            def show(p: Publisher) -> None:
                now = datetime.fromtimestamp(p.fleet.now, UTC).strftime("%Y-%m-%d %H:%M")
                bar.update(task, completed=p.fleet.tick, info=f"{p.summary.readings:,} readings, {now}")

            try:
                publisher.run(stop, listener, on_progress=show)
            except KeyboardInterrupt:
                click.echo("interrupted", err=True)
        if listener is not None:
            listener.close()
            click.echo(f"maintenance orders applied: {len(listener.applied)}")
    finally:
        timer.cancel()
        if log is not None:
            log.close(fleet.describe())
        bus.close()
    click.echo(
        _summary_line(publisher.summary.readings, publisher.summary.events, time.monotonic() - started)
    )
