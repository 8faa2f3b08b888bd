"""`motorwatch bench e2e`: simulated readings -> features -> scores on a real Kafka broker.

The feature worker and the scorer run as their own OS processes (``motorwatch features`` and
``motorwatch score``, as deployed), so the two stages use both cores; the simulator publishes from
this process. The scorer splits a large batch's inference across the cores (``--threads``): a
steady fleet's batches are too small to split, but a burst of new motors, each running its whole
LSTM sequence, takes both. Each measurement has topics of its own (``--topic-prefix``) and the
registry's latest model (``$MOTORWATCH_REGISTRY``, trained with the motor profile).

- ``throughput``: a backlog of simulated readings (``count``, 2,000 motors at 1 Hz, no sensor
  faults) published as fast as the broker takes them, then both workers started: readings through
  the pipeline per second = readings / (last score's time - first score's time), scores being
  stamped by the broker's CreateTime (the scorer's wall clock at send).
- latency: 20,000 motors at 1 Hz, paced at real time, so a reading's event time is the wall clock
  when its motor samples it. The target run has a staggered fleet (``FleetConfig.stagger``: the
  motors sample in turn over each second, sent by a gateway every 20 ms), as a plant's sensors do;
  a second run has every motor sample at the same instant, the worst case of a burst of 20,000
  readings each second (no target). Latency of a score = its CreateTime - its reading's event
  time. The motor profile holds a reading back until its motor's clock has passed it by the grace
  period (60 s: out-of-order readings land where they belong), so no score comes sooner: the rows
  give the latency beyond that hold (raw - grace), what the pipeline adds, and the raw one. A
  pipeline that cannot keep up shows as a backlog and latency. The percentiles leave out the first
  ``WARMUP_S`` of scores: 20,000 motors' first vectors come within a second, and each new motor
  costs the scorer room in its arrays and a whole LSTM sequence, a one-off backlog of 2-3 s at
  start; the note gives the whole run's p99 and max beside them.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from features.spec import FeatureSpec
from ingest import topics
from ingest.benchtools import load_note
from ingest.kafka_bus import KafkaBus
from ingest.profiles import load_profile
from ingest.schemas import Score, decode_many
from motorwatch.config import BusConfig, default_registry
from simulator.config import FaultRates, FleetConfig
from simulator.fleet import Fleet
from simulator.publish import Pacing, Publisher

TARGET_RATE = 20_000  # readings/s: 20,000 motors at 1 Hz
THROUGHPUT_MOTORS = 2_000
PACED_SECONDS = 120.0  # a paced run: the 60 s grace period, then 60 s of scores
WARMUP_S = 10.0  # latency is measured on the scores after these (the first ones meet a cold scorer)
PARTITIONS = 6
START_AFTER_S = 3.0  # a paced fleet starts this long after it is built
MOTORWATCH = str(Path(sys.executable).with_name("motorwatch"))


def run(count: int, bus: BusConfig, console) -> list[dict]:
    if bus.kind != "kafka" or not bus.bootstrap:
        raise SystemExit("bench e2e runs on a real Kafka broker: give --bootstrap HOST:PORT")
    profile = load_profile("motor")
    registry = default_registry()
    _check_model(registry, profile)
    grace = FeatureSpec.from_profile(profile).grace
    ticks = max(count // THROUGHPUT_MOTORS, int(grace) + 60)
    n = ticks * THROUGHPUT_MOTORS
    console.print(f"  throughput: {n:,} readings ({THROUGHPUT_MOTORS:,} motors x {ticks} s) as a backlog")
    through = _throughput(bus.bootstrap, registry, ticks)
    rows = [
        {
            "benchmark": "readings through features + scorer (backlog)",
            "value": through.rate,
            "unit": "readings/s",
            "target": f">= {TARGET_RATE:,}",
            "note": f"{through.scores:,} scores of {n:,} readings; 2 processes on Kafka; {load_note()}",
        }
    ]
    for stagger in (True, False):
        how = "sampling in turn" if stagger else "all sampling at once"
        console.print(f"  latency: {TARGET_RATE:,} motors at 1 Hz, {how}, paced for {PACED_SECONDS:.0f} s")
        rows += _paced_rows(_paced(bus.bootstrap, registry, stagger), stagger, grace)
    return rows


def _paced_rows(paced: _Paced, stagger: bool, grace: float) -> list[dict]:
    at = f"at {TARGET_RATE:,} motors x 1 Hz, " + ("staggered" if stagger else "aligned (one burst a second)")
    target = {"target": "<= 0.5"} if stagger else {}
    steady = paced.event_ts >= paced.event_ts.min(initial=np.inf) + WARMUP_S
    raw, beyond = paced.latency[steady], paced.latency[steady] - grace
    whole = paced.latency - grace
    return [
        {
            "benchmark": f"scores per second {at}",
            "value": paced.rate,
            "unit": "scores/s",
            "target": f">= {TARGET_RATE:,}",
            "note": f"last {paced.window:.0f} s; backlog when publishing stopped: {paced.lag:,} readings",
        },
        {
            "benchmark": f"p50 reading-to-score latency beyond the grace hold {at}",
            "value": _pct(beyond, 50),
            "unit": "s",
            "note": f"raw p50 {_pct(raw, 50):.3f} s incl. the profile's {grace:g} s grace period",
        },
        {
            "benchmark": f"p99 reading-to-score latency beyond the grace hold {at}",
            "value": _pct(beyond, 99),
            "unit": "s",
            **target,
            "note": (
                f"after the first {WARMUP_S:g} s of scores; raw p99 {_pct(raw, 99):.3f} s; "
                f"{len(raw):,} scores. Whole run, warm-up included: p99 {_pct(whole, 99):.3f} s, "
                f"max {_pct(whole, 100):.3f} s; {load_note()}"
            ),
        },
    ]


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else math.nan


def _check_model(registry: Path, profile) -> None:
    from models.registry import Registry

    try:
        Registry(registry).load(spec=FeatureSpec.from_profile(profile))
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(
            f"bench e2e needs a model trained with the motor profile in {registry} "
            f"(set MOTORWATCH_REGISTRY, or run `motorwatch demo` once to train one): {exc}"
        ) from None


@dataclass
class _Throughput:
    rate: float
    scores: int


@dataclass
class _Paced:
    rate: float
    window: float
    lag: int
    latency: np.ndarray
    event_ts: np.ndarray


class Metrics:
    """One scrape of a Prometheus ``/metrics`` endpoint on this host; call it for a sum of samples."""

    def __init__(self, port: int) -> None:
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        self.samples = [s for family in text_string_to_metric_families(text) for s in family.samples]

    def __call__(self, name: str, **labels: str) -> float:
        """The sum of the samples named ``name`` whose labels include ``labels``."""
        return sum(s.value for s in self.samples if s.name == name and labels.items() <= s.labels.items())


class _Pipeline:
    """``motorwatch features`` and ``motorwatch score`` as processes on topics ``prefix``*; stopped
    with SIGTERM on exit."""

    def __init__(self, bootstrap: str, registry: Path, prefix: str) -> None:
        self.ports = {"features": _free_port(), "score": _free_port()}
        bus = ["--bootstrap", bootstrap, "--topic-prefix", prefix, "--partitions", str(PARTITIONS)]
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        features = ["--group", f"{prefix}features", "--metrics-port", str(self.ports["features"])]
        score = ["--registry", str(registry), "--group", f"{prefix}scorer", "--batch-size", "4096"]
        score += ["--threads", str(os.cpu_count() or 1)]
        self.procs = [
            subprocess.Popen([MOTORWATCH, "features", *bus, *features], **quiet),
            subprocess.Popen(
                [MOTORWATCH, "score", *bus, *score, "--metrics-port", str(self.ports["score"])], **quiet
            ),
        ]

    def metrics(self, stage: str) -> Metrics | None:
        """A scrape of ``stage``'s /metrics (None while it does not answer)."""
        try:
            return Metrics(self.ports[stage])
        except OSError:
            return None

    def __enter__(self) -> _Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class _Scores:
    """Follows a scores topic from a thread: (CreateTime, event time) of every score."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.stamped: list[np.ndarray] = []
        self.ts: list[np.ndarray] = []
        self.count = 0
        self._stop = threading.Event()
        self._bus = KafkaBus(bootstrap)
        self._consumer = self._bus.consumer([topic], f"bench-e2e-{uuid.uuid4().hex[:8]}")
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        while not self._stop.is_set():
            records = self._consumer.poll_batch(20_000, 0.2)
            if not records:
                continue
            decoded, _ = decode_many([r.value for r in records], Score)
            self.stamped.append(np.array([r.timestamp_ms for r in records], dtype=np.float64) / 1000.0)
            self.ts.append(np.array([s.ts for _, s in decoded]))
            self.count += len(records)

    def close(self) -> tuple[np.ndarray, np.ndarray]:
        self._stop.set()
        self._thread.join()
        self._consumer.close()
        self._bus.close()
        cat = lambda parts: np.concatenate(parts) if parts else np.empty(0)  # noqa: E731
        return cat(self.stamped), cat(self.ts)


@contextlib.contextmanager
def _topics(bootstrap: str) -> Iterator[str]:
    """A fresh topic prefix, with its topics created, and deleted on exit: a run writes ~1 GB, and
    a development broker kept them all."""
    prefix = f"bench-e2e-{uuid.uuid4().hex[:8]}."
    names = [prefix + t for t in topics.ALL]
    bus = KafkaBus(bootstrap)
    try:
        bus.create_topics(names, PARTITIONS)
        yield prefix
    finally:
        try:
            bus.delete_topics(names)
        finally:
            bus.close()


def _publish(bootstrap: str, prefix: str, config: FleetConfig, pacing: Pacing, end_ts: float) -> int:
    """Run a fleet onto ``prefix``sensor.readings until ``end_ts`` (event time); returns readings sent.
    A paced run starts when its wall clock reaches the fleet's start (its readings' event times)."""
    bus = KafkaBus(bootstrap)
    fleet = Fleet(config, seed=1)
    publisher = Publisher(
        fleet,
        bus.producer(),
        pacing,
        end_ts=end_ts,
        readings_topic=prefix + topics.READINGS,
        maintenance_topic=prefix + topics.MAINTENANCE,
    )
    try:
        if pacing.speed is not None:
            time.sleep(max(0.0, config.start_ts - time.time()))
        publisher.run(threading.Event())
    finally:
        publisher.producer.close()
        bus.close()
    return publisher.summary.readings


def _wait(pipeline: _Pipeline, done, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        for proc in pipeline.procs:
            if proc.poll() is not None:
                raise SystemExit(f"bench e2e: {' '.join(proc.args[:2])} exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit(f"bench e2e: the pipeline did not finish within {timeout_s:.0f} s")
        time.sleep(0.5)


def _throughput(bootstrap: str, registry: Path, ticks: int) -> _Throughput:
    with _topics(bootstrap) as prefix:
        config = FleetConfig(
            motors=THROUGHPUT_MOTORS, interval_s=1.0, start_ts=time.time() - ticks, faults=FaultRates.none()
        )
        sent = _publish(bootstrap, prefix, config, Pacing(None), config.start_ts + ticks)
        scores = _Scores(bootstrap, prefix + topics.SCORES)
        with _Pipeline(bootstrap, registry, prefix) as pipeline:

            def drained() -> bool:
                f, s = pipeline.metrics("features"), pipeline.metrics("score")
                if f is None or s is None:
                    return False
                vectors = f("motorwatch_features_emitted_total", kind="vector")
                return (
                    f("motorwatch_features_readings_total") == sent
                    and s("motorwatch_scorer_messages_in_total", topic=topics.FEATURES)
                    == vectors + f("motorwatch_features_emitted_total", kind="stale")
                    and scores.count >= vectors
                )

            _wait(pipeline, drained, timeout_s=1800)
        stamped, _ = scores.close()
    span = stamped.max() - stamped.min() if len(stamped) else 0.0
    return _Throughput(rate=len(stamped) / span if span > 0 else math.nan, scores=len(stamped))


def _paced(bootstrap: str, registry: Path, stagger: bool) -> _Paced:
    with _topics(bootstrap) as prefix:
        scores = _Scores(bootstrap, prefix + topics.SCORES)
        with _Pipeline(bootstrap, registry, prefix) as pipeline:
            _wait(pipeline, lambda: pipeline.metrics("features") and pipeline.metrics("score"), 120)
            start = time.time() + START_AFTER_S  # time to build the fleet and connect
            config = FleetConfig(
                motors=TARGET_RATE, interval_s=1.0, start_ts=start, faults=FaultRates.none(), stagger=stagger
            )
            sent = _publish(bootstrap, prefix, config, Pacing(1.0), start + PACED_SECONDS)
            f = pipeline.metrics("features")
            lag = sent - int(f("motorwatch_features_readings_total")) if f is not None else sent
        stamped, ts = scores.close()
    window = (PACED_SECONDS - 60.0) / 2  # the second half of the scoring time
    recent = stamped >= stamped.max() - window if len(stamped) else stamped.astype(bool)
    return _Paced(rate=recent.sum() / window, window=window, lag=lag, latency=stamped - ts, event_ts=ts)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
