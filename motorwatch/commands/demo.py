"""`motorwatch demo`: the whole pipeline in one process on the in-process bus (or a Kafka broker), live."""

from __future__ import annotations

import time
from pathlib import Path

import click

from motorwatch.config import BusConfig, bus_options, registry_option, stop_event

REFRESH_S = 0.25


@click.command()
@click.option("--motors", type=click.IntRange(1, 99_999), default=50, show_default=True, help="Fleet size.")
@click.option(
    "--speed",
    type=click.FloatRange(min=0, min_open=True),
    default=3600.0,
    show_default=True,
    help="Simulated seconds per second (3600: an hour a second).",
)
@click.option("--interval", type=float, default=60.0, show_default=True, help="Seconds between readings.")
@click.option("--seed", type=int, default=7, show_default=True, help="Fleet seed (same seed, same run).")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds [default: Ctrl-C].")
@click.option(
    "--metrics-port", type=int, default=9400, show_default=True, help="Prometheus /metrics port (0: off)."
)
@click.option(
    "--schedule",
    "schedule_out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("schedule.csv"),
    show_default=True,
    help="Maintenance schedule file (.csv or .json), rewritten when the plan changes.",
)
@click.option("--open-loop", is_flag=True, help="Do not perform the scheduled maintenance on the fleet.")
@click.option("--live/--no-live", default=None, help="Live console [default: when on a terminal].")
@click.option(
    "--train-days",
    type=float,
    default=30.0,
    show_default=True,
    help="With an empty registry: days of simulated history (30 motors) to train the first model on.",
)
@registry_option
@bus_options
def cli(
    motors: int,
    speed: float,
    interval: float,
    seed: int,
    duration: float | None,
    metrics_port: int,
    schedule_out: Path,
    open_loop: bool,
    live: bool | None,
    train_days: float,
    registry: Path,
    bus: BusConfig,
) -> None:
    """Simulate a fleet and score it live: simulator, feature worker and scorer in one process.

    Trains a small model first when the registry is empty. With --bootstrap the same stages run
    over a real Kafka broker; --topic-prefix gives a run its own topics and consumer groups there."""
    from rich.console import Console
    from rich.live import Live

    from ingest.profiles import load_profile
    from motorwatch.demo import Demo, DemoConfig, ensure_model
    from scoring import metrics

    console = Console()
    profile = load_profile("motor")
    config = DemoConfig(
        motors=motors,
        interval_s=interval,
        speed=speed,
        seed=seed,
        closed_loop=not open_loop,
        schedule_out=schedule_out,
        train_days=train_days,
    )
    ensure_model(registry, profile, config, lambda m: console.print(f"[dim]{m}[/]"))
    if metrics_port:
        metrics.serve(metrics_port)
        console.print(f"[dim]Prometheus metrics on http://127.0.0.1:{metrics_port}/metrics[/]")
    the_bus = bus.build()
    try:
        _refuse_an_earlier_run(the_bus, bus)
        demo = Demo.build(the_bus, profile, registry, config, bus.partitions, bus.topic_prefix)
    except BaseException:
        the_bus.close()
        raise
    console.print(
        f"[dim]{motors} motors, a reading every {interval:g} s, {speed:g}x real time on the "
        f"{'in-process bus' if bus.kind == 'inproc' else 'Kafka broker ' + str(bus.bootstrap)}; "
        "Ctrl-C stops[/]"
    )
    show = console.is_terminal if live is None else live
    try:
        with stop_event(duration) as stop:
            if show:
                with Live(demo.render(), console=console, refresh_per_second=4) as screen:
                    next_draw = [0.0]

                    def draw(d: Demo) -> None:
                        if time.monotonic() >= next_draw[0]:
                            screen.update(d.render())
                            next_draw[0] = time.monotonic() + REFRESH_S

                    demo.run(stop, draw)
                    screen.update(demo.render())
            else:
                demo.run(stop)
                console.print(demo.render())
    finally:
        demo.close()
        the_bus.close()
    click.echo(f"schedule: {schedule_out}")


def _refuse_an_earlier_run(the_bus, bus: BusConfig) -> None:
    """A demo fleet starts its clock at the same instant every run: on topics that hold an earlier
    run, its windows, sequences and open alerts would mix with that run's (and look late)."""
    from ingest import topics

    readings = bus.topic(topics.READINGS)
    if bus.kind == "inproc":
        return  # a new in-process bus is empty
    held = sum(the_bus.end_offsets(readings))
    if held:
        raise click.ClickException(
            f"{readings} on {bus.bootstrap} already holds {held:,} readings of an earlier run, and "
            "a demo fleet starts its clock at the same instant every run. Give this run its own "
            "topics with --topic-prefix (e.g. --topic-prefix run2.), or start from an empty broker "
            "(`motorwatch kafka stop && motorwatch kafka start`)."
        )
