"""``motorwatch bench models``: the ensemble's batched inference against the naive ways to call the models.

A model of production size (the motor profile's forest and LSTM sizes, the LSTM trained for one
epoch: speed does not depend on how well it learnt) is trained on a synthetic run-to-failure log with
the motor profile's feature spec, saved to a temporary registry and loaded back, so the figures are
those of the serving path (:meth:`models.registry.Registry.load` -> :class:`models.inference.Predictor`,
ONNX, one thread per run). Rows:

- ``ensemble predict, batches of 1024``: rows/s through ``Predictor.predict`` (forest + LSTM + blend);
- the same on two threads, each batch split across them (the machine's two cores on one scorer);
- ``ensemble predict, batch of one``: median latency (p99 in the note);
- ``scikit-learn per-row predict``: both forests called on one row at a time (what ONNX saves);
- ``Keras model.predict per call``: the LSTM through ``model.predict`` on a batch of one, and a
  compiled ``tf.function`` on the same input (what the ONNX export saves).

Rates are wall-clock; each note adds the rate per CPU-second, which the shared machine's load changes less.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from features.spec import FeatureSpec
from ingest.benchtools import Span
from ingest.profiles import load_profile
from models.inference import Predictor
from models.lstm import LSTMConfig
from models.registry import Registry
from models.synthetic import synthetic_log
from models.training import TrainConfig, fit

BATCH = 1024
SINGLE_CALLS = 300  # batch-of-one calls timed (after a warm-up)
NAIVE_CALLS = 100  # per-row scikit-learn and per-call Keras calls timed
MAX_ROWS = 500_000  # rows through the batched path at most, whatever --n says


def _train(console) -> tuple[Any, Any, TrainConfig]:
    """A production-size model on a synthetic motor log, through the registry; also the raw models."""
    profile = load_profile("motor")
    spec = FeatureSpec.from_profile(profile)
    full = TrainConfig.for_profile(profile)
    config = replace(full, lstm=replace(full.lstm, epochs=1, max_sequences=5_000), truncations=1)
    console.print("  training a production-size model on a synthetic log (about a minute) ...")
    ds = synthetic_log(profile, spec, n_assets=40, life=(800, 1200), step=300.0)
    result = fit(ds, profile, spec, config, {"synthetic": "0" * 64}, log=lambda *_: None)
    with tempfile.TemporaryDirectory() as root:
        registry = Registry(Path(root))
        predictor = registry.load(registry.save(result.bundle, result.card), spec)
    return predictor, result, config


def run(count: int, bus: Any, console) -> list[dict]:
    """Rows for ``motorwatch bench models`` (``bus`` is unused: inference does not touch the bus)."""
    predictor, result, config = _train(console)
    rng = np.random.default_rng(0)
    b = predictor.bundle
    f, t = len(predictor.feature_names), predictor.seq_len
    last = (b.baseline + 2 * b.scale * rng.standard_normal((BATCH, f))).astype(np.float32)
    seq = last[:, None, :] + (0.1 * b.scale * rng.standard_normal((BATCH, t, f))).astype(np.float32)

    rows = max(1, min(count, MAX_ROWS) // BATCH) * BATCH
    batched = _batched(predictor, last, seq, rows)
    wall_rate, _ = batched.rates(rows)
    two = _batched(Predictor(b, predictor.version, threads=2), last, seq, rows)

    single = []
    for i in range(SINGLE_CALLS + 10):
        with Span() as one:
            predictor.predict(last[i % BATCH : i % BATCH + 1], seq[i % BATCH : i % BATCH + 1])
        if i >= 10:
            single.append(one.wall)
    p50, p99 = (float(np.quantile(single, q)) * 1e3 for q in (0.5, 0.99))

    clf, reg = result.fitted["forest_classifier"], result.fitted["forest_regressor"]
    with Span() as sk:
        for i in range(NAIVE_CALLS):
            clf.predict_proba(last[i : i + 1])
            reg.predict(last[i : i + 1])
    sk_ms = sk.wall / NAIVE_CALLS * 1e3

    keras_ms, tf_ms = _keras_per_call(result.fitted["lstm_weights"], config.lstm, seq)
    return [
        {
            "benchmark": "ensemble predict, batches of 1024",
            "value": wall_rate,
            "unit": "rows/s",
            "target": ">= 50000",
            "note": f"{rows:,} rows, forest + LSTM (ONNX) + blend; {batched.per_cpu(rows)}",
        },
        {
            "benchmark": "ensemble predict, batches of 1024, 2 threads",
            "value": two.rates(rows)[0],
            "unit": "rows/s",
            "target": ">= 50000",
            "note": f"the machine's 2 cores on one scorer; {two.per_cpu(rows)}",
        },
        {
            "benchmark": "ensemble predict, batch of one",
            "value": p50,
            "unit": "ms",
            "target": "< 5",
            "note": f"median of {SINGLE_CALLS} calls; p99 {p99:.2f} ms",
        },
        {
            "benchmark": "naive: scikit-learn forests, per-row predict",
            "value": sk_ms,
            "unit": "ms/row",
            "note": f"{1e3 / sk_ms:,.0f} rows/s; batched ensemble is {wall_rate * sk_ms / 1e3:,.0f}x faster",
        },
        {
            "benchmark": "naive: Keras LSTM model.predict, per call (batch of one)",
            "value": keras_ms,
            "unit": "ms/call",
            "note": f"compiled tf.function: {tf_ms:.2f} ms/call; ONNX ensemble p50 {p50:.2f} ms",
        },
    ]


def _batched(predictor: Predictor, last: np.ndarray, seq: np.ndarray, rows: int) -> Span:
    """Time ``rows`` rows through ``predict`` in batches of ``len(last)`` (after one warm-up call)."""
    predictor.predict(last, seq)
    with Span() as span:
        for _ in range(rows // len(last)):
            predictor.predict(last, seq)
    return span


def _keras_per_call(weights, config: LSTMConfig, seq: np.ndarray) -> tuple[float, float]:
    """Milliseconds per batch-of-one call: Keras ``model.predict`` and a compiled ``tf.function``."""
    from models.lstm import keras_model, tensorflow

    tf = tensorflow()

    model = keras_model(weights, config)
    one = seq[:1]
    model.predict(one, verbose=0)  # warm-up (traces the predict function)
    with Span() as keras_span:
        for i in range(NAIVE_CALLS):
            model.predict(seq[i : i + 1], verbose=0)
    forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    forward(tf.constant(one))
    with Span() as tf_span:
        for i in range(NAIVE_CALLS):
            forward(tf.constant(seq[i : i + 1]))
    return keras_span.wall / NAIVE_CALLS * 1e3, tf_span.wall / NAIVE_CALLS * 1e3
