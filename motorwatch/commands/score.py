"""`motorwatch score`: run the scorer worker (sensor.features -> scores, alerts, schedule, /metrics)."""

from __future__ import annotations

import threading
from pathlib import Path

import click

from motorwatch.config import BusConfig, bus_options, profile_option, registry_option, stop_event


@click.command()
@bus_options
@profile_option
@registry_option
@click.option(
    "--group", default="motorwatch-scorer", show_default=True, help="Consumer group of the scorers."
)
@click.option(
    "--batch-size", type=int, default=1024, show_default=True, help="Max feature vectors per batch."
)
@click.option(
    "--batch-timeout-ms",
    type=float,
    default=50.0,
    show_default=True,
    help="Longest wait for the first record of a batch.",
)
@click.option(
    "--score-interval",
    type=float,
    default=0.0,
    show_default=True,
    help="Publish at most one score per asset per this much event time (profile time unit; 0: all).",
)
@click.option(
    "--schedule-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the maintenance plan here (.csv or .json) whenever it changes.",
)
@click.option(
    "--metrics-port", type=int, default=9402, show_default=True, help="Prometheus /metrics port (0: off)."
)
@click.option("--top-k", type=int, default=10, show_default=True, help="Riskiest assets exported as gauges.")
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Inference threads, for a scorer with cores to itself: each batch is split across them "
    "(the scores are exactly those of one thread).",
)
@click.option(
    "--alertmanager",
    metavar="URL",
    default=None,
    help="Also deliver alerts to Alertmanager's v2 API at URL (e.g. http://127.0.0.1:9093).",
)
@click.option(
    "--duration", type=float, default=None, help="Stop after this many seconds (default: run until Ctrl-C)."
)
def cli(
    bus: BusConfig,
    profile: str,
    registry: Path,
    group: str,
    batch_size: int,
    batch_timeout_ms: float,
    score_interval: float,
    schedule_out: Path | None,
    metrics_port: int,
    top_k: int,
    threads: int,
    alertmanager: str | None,
    duration: float | None,
) -> None:
    """Score feature vectors with the registry's latest model, hot-reloading new versions.

    Waits (consuming nothing) while the registry is empty."""
    import logging

    from ingest import topics
    from ingest.profiles import load_profile
    from models.registry import Registry
    from scoring import metrics
    from scoring.sinks import AlertmanagerSink, follow_alerts
    from scoring.worker import Scorer, ScorerConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    the_bus = bus.build()
    the_bus.create_topics([bus.topic(t) for t in topics.ALL], bus.partitions)
    config = ScorerConfig(
        group_id=group,
        topic_prefix=bus.topic_prefix,
        batch_size=batch_size,
        batch_timeout_s=batch_timeout_ms / 1000,
        score_interval=score_interval,
        top_k=top_k,
        schedule_out=schedule_out,
        inference_threads=threads,
    )
    scorer = Scorer(the_bus, load_profile(profile), Registry(registry), config)
    if metrics_port:
        metrics.serve(metrics_port)
    if bus.kind == "inproc":
        click.echo(
            "note: on the in-process bus nothing else publishes features; use `motorwatch demo`.", err=True
        )
    click.echo(
        f"scoring {bus.topic(topics.FEATURES)} from registry {registry} (group {group}); Ctrl-C stops",
        err=True,
    )
    with stop_event(duration) as stop:
        forwarder = None
        if alertmanager:
            forwarder = threading.Thread(
                target=follow_alerts,
                args=(the_bus, stop),
                kwargs={"sink": AlertmanagerSink(alertmanager), "topic": bus.topic(topics.ALERTS)},
                daemon=True,
            )
            forwarder.start()
        try:
            scorer.run(stop)
        finally:
            stop.set()
            if forwarder is not None:
                forwarder.join(timeout=5)
            scorer.close()
            the_bus.close()
    click.echo(f"scored {scorer.scored} feature vectors", err=True)
