"""Shared configuration: which bus, which profile, where the model registry lives.

Options shared by several commands are defined once here as click decorators.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import click

DEFAULT_PARTITIONS = 6


@dataclass(frozen=True, slots=True)
class BusConfig:
    """``inproc``: the embedded in-process bus. ``kafka``: a real broker at ``bootstrap``."""

    kind: Literal["inproc", "kafka"] = "inproc"
    bootstrap: str | None = None
    partitions: int = DEFAULT_PARTITIONS
    topic_prefix: str = ""  # prepended to every topic name: isolated pipelines on one cluster

    def topic(self, name: str) -> str:
        """The name of topic ``name`` (e.g. ``ingest.topics.READINGS``) on this bus."""
        return self.topic_prefix + name

    def build(self):  # -> ingest.bus.Bus (imported lazily: the Kafka client is not always needed)
        if self.kind == "kafka":
            from ingest.kafka_bus import KafkaBus

            if not self.bootstrap:
                raise click.UsageError("--bus kafka needs --bootstrap HOST:PORT (or MOTORWATCH_BOOTSTRAP)")
            return KafkaBus(self.bootstrap)
        from ingest.inproc import InProcessBus

        return InProcessBus(partitions=self.partitions)


def bus_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--bus``, ``--bootstrap``, ``--partitions``, ``--topic-prefix``; pass one ``bus: BusConfig``."""

    @click.option(
        "--bus",
        "bus_kind",
        type=click.Choice(["inproc", "kafka"]),
        default=None,
        help="Transport (default: kafka when --bootstrap is given, else inproc).",
    )
    @click.option(
        "--bootstrap",
        envvar="MOTORWATCH_BOOTSTRAP",
        default=None,
        metavar="HOST:PORT",
        help="Kafka bootstrap server [env MOTORWATCH_BOOTSTRAP].",
    )
    @click.option(
        "--partitions",
        type=int,
        default=DEFAULT_PARTITIONS,
        show_default=True,
        help="Partitions per topic when topics are created.",
    )
    @click.option(
        "--topic-prefix",
        default="",
        metavar="PREFIX",
        help="Prepended to every topic name, so pipelines sharing a cluster stay apart.",
    )
    @functools.wraps(func)
    def wrapper(
        *args: Any,
        bus_kind: str | None,
        bootstrap: str | None,
        partitions: int,
        topic_prefix: str,
        **kwargs: Any,
    ) -> Any:
        kind = bus_kind or ("kafka" if bootstrap else "inproc")
        bus = BusConfig(kind=kind, bootstrap=bootstrap, partitions=partitions, topic_prefix=topic_prefix)
        return func(*args, bus=bus, **kwargs)

    return wrapper


def default_registry() -> Path:
    """``$MOTORWATCH_REGISTRY``, else the per-user data dir (``$XDG_DATA_HOME/motorwatch/registry``)."""
    env = os.environ.get("MOTORWATCH_REGISTRY")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "motorwatch" / "registry"


def registry_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--registry DIR`` (the model registry)."""
    return click.option(
        "--registry",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Model registry dir [env MOTORWATCH_REGISTRY; default ~/.local/share/motorwatch/registry].",
        callback=lambda ctx, p, v: v or default_registry(),
    )(func)


def json_option(default: str, help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add ``--json FILE`` (passed as ``json_path``): where a command writes its results."""
    return click.option(
        "--json",
        "json_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=Path(default),
        show_default=True,
        help=help,
    )


def profile_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--profile NAME|PATH`` (default ``motor``)."""
    return click.option(
        "--profile",
        default="motor",
        show_default=True,
        help="Asset profile: a shipped name (motor, cmapss) or a TOML path.",
    )(func)


@contextlib.contextmanager
def stop_event(duration_s: float | None = None) -> Iterator[threading.Event]:
    """An event set by Ctrl-C or SIGTERM, or after ``duration_s`` seconds: how a worker command ends.
    The previous signal handlers are restored on exit."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    timer = threading.Timer(duration_s, stop.set) if duration_s is not None else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        yield stop
    finally:
        if timer is not None:
            timer.cancel()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
