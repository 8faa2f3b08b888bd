"""The scorer with real registry models: a tiny RF + LSTM trained here on synthetic run-to-failure data.

- streaming sequences give exactly the scores of the training-side windows (no train/serve skew);
- hot reload under load on a real Kafka broker: every feature message is scored exactly once, by
  the old version before the swap and the new one after it.
"""

from __future__ import annotations

import math
import threading
import time
import uuid

import numpy as np
import pytest
from test_models_registry import PROFILE, SPEC, TINY, synthetic_log

from ingest import topics
from ingest.inproc import InProcessBus
from ingest.schemas import Alert, Features, Score, decode_many, encode
from models.inference import MIN_SPLIT_ROWS, Predictor
from models.registry import Registry
from models.sequences import windows
from models.training import fit
from scoring.worker import Scorer, ScorerConfig


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    ds = synthetic_log(n_assets=20)
    result = fit(ds, PROFILE, SPEC, TINY, {"synthetic.txt": "0" * 64}, log=lambda *_: None)
    registry = Registry(tmp_path_factory.mktemp("registry"))
    registry.save(result.bundle, result.card)
    return ds, result, registry


def messages(ds, rows: np.ndarray) -> list[tuple[bytes, bytes]]:
    """Features messages of log rows, in time order across assets (NaN features omitted, as the
    feature worker does)."""
    order = rows[np.lexsort((ds.asset_id[rows].astype(str), ds.ts[rows]))]
    out = []
    for i in order.tolist():
        feats = {n: v for n, v in zip(SPEC.names, ds.values[i].tolist(), strict=True) if math.isfinite(v)}
        aid = str(ds.asset_id[i])
        out.append((aid.encode(), encode(Features(asset_id=aid, ts=float(ds.ts[i]), features=feats))))
    return out


def collect(bus, topic: str, cls, want: int, timeout_s: float = 60.0) -> list:
    consumer = bus.consumer([topic], f"reader-{uuid.uuid4().hex}")
    out, deadline = [], time.monotonic() + timeout_s
    while len(out) < want and time.monotonic() < deadline:
        batch = consumer.poll_batch(10_000, 0.2)
        pairs, rejects = decode_many([r.value for r in batch], cls)
        assert not rejects
        out.extend(m for _, m in pairs)
    consumer.close()
    return out


@pytest.mark.parametrize("threads", [1, 2])  # `motorwatch score --threads`: the same scores
def test_streamed_scores_equal_the_training_windows_and_alerts_name_real_drivers(trained, threads):
    ds, result, registry = trained
    rows = np.flatnonzero(np.isin(ds.asset_id, ["1", "2", "3", "4"]))
    bus = InProcessBus(partitions=3)
    bus.producer().send_batch(topics.FEATURES, messages(ds, rows))
    scorer = Scorer(bus, PROFILE, registry, ScorerConfig(batch_size=97, inference_threads=threads))
    while scorer.run_once(timeout_s=0.0):
        pass
    scores = collect(bus, topics.SCORES, Score, len(rows), timeout_s=1.0)
    assert len(scores) == len(rows) and {s.model_version for s in scores} == {"v0001"}
    predictor = Predictor(result.bundle)
    expected = predictor.predict(ds.values[rows], windows(ds.values, ds.asset_id, rows, predictor.seq_len))
    by_key = {(s.asset_id, s.ts): s for s in scores}
    got = [by_key[(str(a), float(t))] for a, t in zip(ds.asset_id[rows], ds.ts[rows], strict=True)]
    np.testing.assert_allclose([s.risk for s in got], expected.risk, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose([s.rul for s in got], expected.rul, rtol=1e-5, atol=1e-4)
    for a in collect(bus, topics.ALERTS, Alert, 10**9, timeout_s=0.5):
        assert a.model_version == "v0001"
        assert a.drivers and {d.feature for d in a.drivers} <= set(SPEC.names)


@pytest.mark.parametrize("threads", [2, 3])
def test_a_batch_split_across_threads_scores_exactly_as_one_thread(trained, threads):
    ds, result, _ = trained
    rows = np.arange(min(len(ds.ts), 1000))
    one, many = Predictor(result.bundle), Predictor(result.bundle, threads=threads)
    last, seq = ds.values[rows], windows(ds.values, ds.asset_id, rows, one.seq_len)
    assert len(rows) // MIN_SPLIT_ROWS >= threads  # the batch is really split
    a, b = one.predict(last, seq), many.predict(last, seq)
    assert np.array_equal(a.risk, b.risk) and np.array_equal(a.rul, b.rul)


@pytest.mark.kafka
def test_hot_reload_under_load_on_kafka_scores_every_message_exactly_once(trained, kafka_bootstrap):
    from ingest.kafka_bus import KafkaBus

    ds, result, registry = trained
    prefix = f"t{uuid.uuid4().hex[:8]}."
    bus = KafkaBus(kafka_bootstrap)
    bus.create_topics([prefix + t for t in topics.ALL], 3)
    msgs = messages(ds, np.arange(len(ds.ts)))
    config = ScorerConfig(
        group_id=f"scorer-{prefix}", topic_prefix=prefix, reload_interval_s=0.05, batch_size=256
    )
    scorer = Scorer(bus, PROFILE, registry, config)
    stop = threading.Event()
    worker = threading.Thread(target=scorer.run, args=(stop,), daemon=True)
    worker.start()
    producer = bus.producer()
    try:
        for i in range(0, len(msgs), 100):  # a steady stream while the model changes under it
            producer.send_batch(prefix + topics.FEATURES, msgs[i : i + 100])
            producer.flush()
            if i == len(msgs) // 2 // 100 * 100:
                # Once the scorer is at work (it joins the group and takes over open alerts first).
                deadline = time.monotonic() + 60
                while not scorer.scored and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert registry.save(result.bundle, result.card) == "v0002"
            time.sleep(0.01)
        scores = collect(bus, prefix + topics.SCORES, Score, len(msgs))
    finally:
        stop.set()
        worker.join(timeout=30)
        scorer.close()
        producer.close()
    keys = [(s.asset_id, s.ts) for s in scores]
    assert len(keys) == len(set(keys)) == len(msgs)  # every message once: none lost, none twice
    versions = [s.model_version for s in scores]
    assert versions.count("v0001") > 0 and versions.count("v0002") > 0
    # Per asset (one partition, in order), the switch happens once and never goes back.
    for asset in {a for a, _ in keys}:
        seq = [s.model_version for s in scores if s.asset_id == asset]
        assert seq == sorted(seq)
