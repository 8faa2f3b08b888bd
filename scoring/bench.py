"""`motorwatch bench score`: scorer throughput vs the raw model forward, latency under load, idle latency.

Uses the latest model of the registry at ``$MOTORWATCH_REGISTRY`` (the real RF + LSTM ensemble, ONNX,
one thread) and its profile. Feature vectors are drawn around the model's healthy baseline
(baseline + 2 x healthy spread x N(0, 1)), as Features messages of 5,000 assets on the in-process bus.

- ``model forward``: ``Predictor.predict`` alone on batches of 1024 prepared arrays (the ceiling);
- ``scorer throughput``: ``Scorer.run_once`` end to end (decode, sequences, inference, policy,
  encode, produce, commit) on a pre-filled topic, and its ratio to the forward rate. The vectors
  are 1 s apart per asset: with a model trained at a slower cadence (``seq_step``), most rows take
  one LSTM step from a remembered state rather than the whole sequence (the note says how many);
- ``naive per-message``: one ``predict`` call per message (what batching saves);
- ``p99 latency at 5,000/s``: a paced producer stamps each message with the wall clock; latency is
  the time from that stamp to the scorer handing the score to the producer;
- ``idle single message``: one message into an idle scorer, until its score is produced.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from ingest import topics
from ingest.benchtools import Span, load_note
from ingest.inproc import InProcessBus
from ingest.profiles import load_profile
from ingest.schemas import Features, Score, decode_many, encode
from scoring import metrics
from scoring.worker import Scorer, ScorerConfig

N_ASSETS = 5_000


def _registry():
    from models.registry import Registry

    root = os.environ.get("MOTORWATCH_REGISTRY")
    registry = Registry(Path(root)) if root else None
    if registry is None or registry.latest_version() is None:
        raise RuntimeError(
            "bench score needs a trained model: set MOTORWATCH_REGISTRY to a registry holding "
            "one (e.g. `motorwatch train --profile cmapss --data train_FD001.txt`)"
        )
    return registry


class _Workload:
    """Feature vectors around the model's healthy baseline, and Features messages of them."""

    def __init__(self, predictor, seed: int = 0) -> None:
        self.names = predictor.feature_names
        b = predictor.bundle
        self.rng = np.random.default_rng(seed)
        self.center = b.baseline.astype(np.float32)
        self.spread = 2.0 * b.scale.astype(np.float32)

    def vectors(self, n: int) -> np.ndarray:
        return self.center + self.spread * self.rng.standard_normal((n, len(self.names)), dtype=np.float32)

    def messages(self, n: int, ts0: float = 1.0, clock=None) -> list[tuple[bytes, bytes]]:
        """``n`` messages, asset ``i % N_ASSETS``, ts from ``clock()`` or one step per round of assets."""
        out = []
        names = self.names
        for i, row in enumerate(self.vectors(n).tolist()):
            aid = f"m{i % N_ASSETS:05d}"
            ts = clock() if clock else ts0 + i // N_ASSETS
            out.append(
                (
                    aid.encode(),
                    encode(Features(asset_id=aid, ts=ts, features=dict(zip(names, row, strict=True)))),
                )
            )
        return out


def _forward_rate(predictor, load: _Workload, n: int, batch: int = 1024) -> tuple[float, float]:
    x = load.vectors(batch)
    seq = np.repeat(x[:, None, :], predictor.seq_len, axis=1) + load.vectors(batch)[:, None, :] * 0.01
    predictor.predict(x, seq)  # warm-up
    rounds = max(n // batch, 3)
    with Span() as clock:
        for _ in range(rounds):
            predictor.predict(x, seq)
    return clock.rates(rounds * batch)


def _naive_rate(predictor, load: _Workload, n: int = 500) -> float:
    x = load.vectors(n)
    seq = np.repeat(x[:, None, :], predictor.seq_len, axis=1)
    with Span() as clock:
        for i in range(n):
            predictor.predict(x[i : i + 1], seq[i : i + 1])
    return clock.rates(n)[0]


def _scorer(bus, registry, profile, **kw) -> Scorer:
    """A scorer that has loaded the model and scored its first batch (warm-up), if any is waiting."""
    config = ScorerConfig(group_id=f"bench-{uuid.uuid4().hex[:8]}", reload_interval_s=3600.0, **kw)
    scorer = Scorer(bus, profile, registry, config)
    scorer.run_once(max_records=1024, timeout_s=0.0)
    if scorer.predictor is None:  # else every rate below would read 0
        raise RuntimeError(f"the scorer did not load model {registry.latest_version()}: see its log")
    return scorer


def _throughput(registry, profile, load: _Workload, n: int) -> tuple[float, float, float]:
    """Vectors per wall second and per CPU-second, and the share of them that took one LSTM step."""
    bus = InProcessBus(partitions=6, max_backlog=n + 1)
    bus.create_topics(topics.ALL, 6)
    msgs = load.messages(n)
    producer = bus.producer()
    for i in range(0, n, 50_000):
        producer.send_batch(topics.FEATURES, msgs[i : i + 50_000])
    scorer = _scorer(bus, registry, profile)
    steps = metrics.lstm_rows("step")
    done = 0
    with Span() as clock:
        while scored := scorer.run_once(timeout_s=0.0):
            done += scored
    bus.close()
    return *clock.rates(done), (metrics.lstm_rows("step") - steps) / max(done, 1)


class _Stamp:
    """Wraps the scorer's producer: wall time at which each score was handed over."""

    def __init__(self, producer) -> None:
        self.producer = producer
        self.sent: list[tuple[float, list[bytes]]] = []

    def send_batch(self, topic, messages):
        if topic == topics.SCORES:
            messages = list(messages)
            self.sent.append((time.time(), [v for _, v in messages]))
        self.producer.send_batch(topic, messages)

    def __getattr__(self, name):
        return getattr(self.producer, name)

    def latencies(self) -> np.ndarray:
        out = []
        for at, values in self.sent:
            pairs, _ = decode_many(values, Score)
            out.extend(at - m.ts for _, m in pairs)
        return np.array(out)


def _latencies(registry, profile, feed) -> np.ndarray:
    """Feature-to-score latencies of a scorer running in its own thread while ``feed(producer)``
    publishes timestamped feature vectors to it."""
    bus = InProcessBus(partitions=6)
    bus.create_topics(topics.ALL, 6)
    scorer = _scorer(bus, registry, profile)
    stamp = scorer.producer = _Stamp(scorer.producer)
    stop = threading.Event()
    worker = threading.Thread(target=scorer.run, args=(stop,))
    worker.start()
    feed(bus.producer())
    time.sleep(0.2)
    stop.set()
    worker.join()
    bus.close()
    return stamp.latencies()


def _paced_latency(registry, profile, load: _Workload, rate: float, seconds: float) -> np.ndarray:
    tick = 0.01
    per_tick = int(rate * tick)

    def feed(producer) -> None:
        began, k = time.perf_counter(), 0
        while time.perf_counter() - began < seconds:
            producer.send_batch(topics.FEATURES, load.messages(per_tick, clock=time.time))
            k += 1
            time.sleep(max(0.0, k * tick - (time.perf_counter() - began)))

    return _latencies(registry, profile, feed)


def _idle_latency(registry, profile, load: _Workload, samples: int = 20) -> np.ndarray:
    def feed(producer) -> None:
        for _ in range(samples):
            time.sleep(0.2)  # idle: the scorer sits in its poll
            producer.send_batch(topics.FEATURES, load.messages(1, clock=time.time))

    return _latencies(registry, profile, feed)


def run(count: int, bus, console) -> list[dict]:
    """Scorer benchmarks (the in-process bus is used whatever ``bus`` says: this measures the scorer)."""
    registry = _registry()
    version = registry.latest_version()
    profile = load_profile(registry.card(version).profile)
    from features.spec import FeatureSpec

    # With the profile's feature spec, as the scorer loads it: a model of another spec fails here, loud.
    predictor = registry.load(version, spec=FeatureSpec.from_profile(profile))
    load = _Workload(predictor)
    n = min(count, 200_000)
    f = len(predictor.feature_names)
    note = f"profile {profile.name}, model {version}, {f} features, T={predictor.seq_len}"
    console.print(f"  {note}; {n:,} vectors")
    forward, forward_cpu = _forward_rate(predictor, load, n)
    naive = _naive_rate(predictor, load)
    scored, scored_cpu, stepped = _throughput(registry, profile, load, n)
    paced = _paced_latency(registry, profile, load, rate=5_000.0, seconds=10.0)
    idle = _idle_latency(registry, profile, load)
    busy = load_note()
    return [
        {
            "benchmark": "model forward (RF+LSTM, batches of 1024)",
            "value": forward,
            "unit": "vectors/s",
            "note": note,
        },
        {
            "benchmark": "model forward per CPU-second",
            "value": forward_cpu,
            "unit": "vectors/cpu-s",
            "note": "the per-core ceiling, whatever else runs on the machine",
        },
        {
            "benchmark": "scorer throughput (decode..commit)",
            "value": scored,
            "unit": "vectors/s",
            "target": ">= 20000",
            "note": f"in-process bus, wall clock, {busy}; {100 * stepped:.1f} % of the vectors took one "
            f"LSTM step (model seq_step {predictor.seq_step:g} s, vectors 1 s apart)",
        },
        {
            "benchmark": "scorer throughput per CPU-second",
            "value": scored_cpu,
            "unit": "vectors/cpu-s",
            "target": ">= 20000",
            "note": "one core's worth of CPU",
        },
        {
            "benchmark": "scorer / model forward (wall)",
            "value": 100 * scored / forward,
            "unit": "%",
            "target": ">= 30",
        },
        {
            "benchmark": "scorer / model forward (CPU)",
            "value": 100 * scored_cpu / forward_cpu,
            "unit": "%",
            "target": ">= 30",
        },
        {
            "benchmark": "naive: one predict per message",
            "value": naive,
            "unit": "vectors/s",
            "note": f"the batched scorer is {scored / naive:.0f}x faster",
        },
        {
            "benchmark": "feature-to-score p50 at 5,000/s",
            "value": 1000 * float(np.percentile(paced, 50)),
            "unit": "ms",
            "note": f"{len(paced):,} scores over 10 s",
        },
        {
            "benchmark": "feature-to-score p99 at 5,000/s",
            "value": 1000 * float(np.percentile(paced, 99)),
            "unit": "ms",
            "target": "<= 100",
            "note": busy,
        },
        {
            "benchmark": "idle single message (max of 20)",
            "value": 1000 * float(idle.max()),
            "unit": "ms",
            "target": "<= 20",
            "note": f"median {1000 * float(np.median(idle)):.1f} ms",
        },
    ]
