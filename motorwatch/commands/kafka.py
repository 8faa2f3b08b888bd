"""`motorwatch kafka start|stop|status`: a local single-node Kafka broker, no Docker needed."""

from __future__ import annotations

from pathlib import Path

import click

state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the broker's pid, ports and data live [env MOTORWATCH_KAFKA_STATE; "
    "default ~/.local/state/motorwatch/kafka].",
)


def _progress(message: str) -> None:
    click.echo(message, err=True)  # stdout carries only the bootstrap address


@click.group()
def cli() -> None:
    """Start, stop or inspect a local single-node Kafka broker (KRaft, loopback only).

    The broker's jars are resolved from Maven Central on first use and cached
    [env MOTORWATCH_KAFKA_CACHE; default ~/.cache/motorwatch/kafka].
    """


@cli.command()
@state_dir_option
@click.option(
    "--timeout",
    "timeout_s",
    type=float,
    default=120.0,
    show_default=True,
    help="Seconds to wait for the broker to be ready.",
)
def start(state_dir: Path | None, timeout_s: float) -> None:
    """Start the broker (or find the running one) and print its bootstrap address."""
    from ingest import local_broker

    try:
        info = local_broker.start(state_dir, timeout_s=timeout_s, log=_progress)
    except local_broker.BrokerError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(info.bootstrap)


@cli.command()
@state_dir_option
def stop(state_dir: Path | None) -> None:
    """Stop the broker and delete its data (its log stays in the state dir)."""
    from ingest import local_broker

    try:
        was_running = local_broker.stop(state_dir)
    except local_broker.BrokerError as exc:
        raise click.ClickException(str(exc)) from exc
    _progress("stopped" if was_running else "not running")


@cli.command()
@state_dir_option
def status(state_dir: Path | None) -> None:
    """Print the bootstrap address, pid and log of the running broker; exit 1 if none runs."""
    from ingest import local_broker

    info = local_broker.status(state_dir)
    if info is None:
        _progress("not running")
        raise SystemExit(1)
    click.echo(info.bootstrap)
    _progress(f"Kafka {info.version}, pid {info.pid}, log {info.log}")
