"""`motorwatch features`: run the feature worker, or compute features of a log file (training)."""

from __future__ import annotations

from pathlib import Path

import click

from motorwatch.config import BusConfig, bus_options, profile_option, stop_event


@click.command()
@bus_options
@profile_option
@click.option("--group", default="motorwatch-features", show_default=True, help="Consumer group.")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep partition snapshots here (restart resumes from them). Default: state in memory only.",
)
@click.option(
    "--checkpoint-interval",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds between checkpoints (snapshot, then commit) with --state-dir.",
)
@click.option("--metrics-port", type=int, default=0, help="Serve Prometheus /metrics on this port (0: off).")
@click.option(
    "--duration", type=float, default=None, help="Stop after this many seconds (default: until Ctrl-C)."
)
@click.option(
    "--log",
    "log_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Instead of the worker: features of this readings log (Parquet or CSV, delivery order).",
)
@click.option(
    "--maintenance",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="With --log: maintenance events (asset_id, ts) as Parquet or CSV.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="With --log: where to write the features (Parquet).",
)
def cli(
    bus: BusConfig,
    profile: str,
    group: str,
    state_dir: Path | None,
    checkpoint_interval: float,
    metrics_port: int,
    duration: float | None,
    log_path: Path | None,
    maintenance: Path | None,
    out: Path | None,
) -> None:
    """Compute event-time rolling features: sensor.readings -> sensor.features (or a log -> a file)."""
    import logging

    from ingest.profiles import load_profile

    the_profile = load_profile(profile)
    if log_path is not None:
        _batch(the_profile, log_path, maintenance, out)
        return
    from prometheus_client import start_http_server

    from features.worker import FeatureWorker, WorkerConfig
    from ingest import topics

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    the_bus = bus.build()
    the_bus.create_topics([bus.topic(t) for t in topics.ALL], bus.partitions)
    config = WorkerConfig.prefixed(
        bus.topic_prefix,
        group_id=group,
        state_dir=state_dir,
        checkpoint_interval_s=checkpoint_interval,
    )
    worker = FeatureWorker(the_bus, the_profile, config)
    if metrics_port:
        start_http_server(metrics_port)
    click.echo(
        f"features: {config.readings_topic} -> {config.features_topic} (group {group}); Ctrl-C stops",
        err=True,
    )
    try:
        with stop_event(duration) as stop:
            worker.run(stop)
    finally:
        the_bus.close()


def _batch(profile, log_path: Path, maintenance: Path | None, out: Path | None) -> None:
    import pandas as pd

    from features.batch import compute_features
    from features.spec import FeatureSpec

    def read(path: Path) -> pd.DataFrame:
        return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)

    if out is None:
        raise click.UsageError("--log needs --out")
    events = read(maintenance) if maintenance is not None else None
    frame = compute_features(read(log_path), FeatureSpec.from_profile(profile), maintenance=events)
    frame.to_parquet(out, index=False)
    click.echo(f"wrote {len(frame)} feature vectors x {frame.shape[1] - 2} features to {out}", err=True)
