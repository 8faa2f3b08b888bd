"""`motorwatch alerts`: the open alerts from maintenance.alerts, once or live (`--follow`)."""

from __future__ import annotations

import threading

import click

from motorwatch.config import BusConfig, bus_options, stop_event


@click.command()
@bus_options
@click.option("--follow", is_flag=True, help="Keep the table live until Ctrl-C.")
@click.option(
    "--alertmanager",
    metavar="URL",
    default=None,
    help="Also deliver the alerts to Alertmanager's v2 API at URL (e.g. http://127.0.0.1:9093).",
)
def cli(bus: BusConfig, follow: bool, alertmanager: str | None) -> None:
    """Show the open alerts by priority (read from the start of maintenance.alerts)."""
    from rich.console import Console
    from rich.live import Live

    from ingest import topics
    from scoring.sinks import AlertmanagerSink, follow_alerts, render

    console = Console()
    the_bus = bus.build()
    sink = AlertmanagerSink(alertmanager) if alertmanager else None
    topic = bus.topic(topics.ALERTS)
    try:
        # What is open now: read up to the end of the topic, then stop by itself.
        board = follow_alerts(the_bus, threading.Event(), follow=False, sink=sink, topic=topic)
        if not follow:
            console.print(render(board))
            return
        with stop_event() as stop, Live(render(board), console=console) as live:
            # The topic is re-read from its start: what the board holds already is redelivery.
            follow_alerts(
                the_bus, stop, sink=sink, board=board, topic=topic, on_change=lambda b: live.update(render(b))
            )
    finally:
        the_bus.close()
