"""``motorwatch bench features``: the streaming engine, the batch engine, state per motor, a naive baseline.

Rows (rates per wall-clock second and per CPU-second of this process, since the machine is shared):

- streaming engine alone: ``count`` motor readings (1,000 motors at 1 reading/s) fed to
  :class:`features.stream.FeatureEngine` in the worker's batches of 4,096; target >= 100,000/s on one core;
- batch engine: the same log through :func:`features.batch.compute_features` (target >= 1,000,000/s),
  and a training-log layout (200 motors at a 1-minute interval), after a call on a small log has
  loaded its compiled loops (a one-time cost per process: ~0.7 s from numba's cache, ~10 s to
  compile on a machine's first run);
- state per motor: 10,000 motors at 1 reading/s through the streaming engine with the default windows
  (its rings are allocated whole, so the figure does not grow with time; target <= 200 KB);
- a naive implementation measured in the same run: per reading, pandas ``rolling`` over the asset's
  history for each window (mean, std, min, max only), and the streaming engine's speed-up over it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from features.batch import compute_features
from features.spec import FeatureSpec
from features.stream import FeatureEngine
from ingest.benchtools import Span, rate_rows
from ingest.profiles import load_profile
from ingest.schemas import ReadingBatch

BATCH = 4_096  # what the worker's run_once polls
STREAM_MOTORS = 1_000
STREAM_MAX = 1_000_000
TRAINING_MOTORS, TRAINING_INTERVAL_S = 200, 60.0
STATE_MOTORS = 10_000
STATE_SECONDS = (60, 300)  # at least a grace period's worth of readings per motor, at most 5 minutes
NAIVE_MOTORS, NAIVE_READINGS = 20, 400  # ~60 readings per CPU-second: kept short
T0 = 1.7e9


def motor_log(n: int, motors: int, interval_s: float = 1.0, seed: int = 0) -> pd.DataFrame:
    """``n`` readings of ``motors`` motors, one per motor every ``interval_s``, in time order."""
    rng = np.random.default_rng(seed)
    ticks = -(-n // motors)
    elapsed = np.repeat(np.arange(ticks) * interval_s, motors)[:n]
    motor = np.tile(np.arange(motors), ticks)[:n]
    ids = np.array([f"m{i + 1:05d}" for i in range(motors)], dtype=object)
    return pd.DataFrame(
        {
            "asset_id": ids[motor],
            "ts": T0 + elapsed,
            "temperature_c": 60.0 + rng.normal(0, 1.0, n) + 0.001 * motor,
            "vibration_mm_s": rng.gamma(2.0, 0.5, n),
            "current_a": 40.0 + rng.normal(0, 2.0, n),
            "runtime_h": 1000.0 + elapsed / 3600.0,
        }
    )


def _batches(log: pd.DataFrame, signals: tuple[str, ...]) -> list[ReadingBatch]:
    ids, ts, values = log["asset_id"].tolist(), log["ts"].to_numpy(), log[list(signals)].to_numpy()
    return [
        ReadingBatch(signals, ids[s : s + BATCH], ts[s : s + BATCH], values[s : s + BATCH], np.arange(m))
        for s in range(0, len(log), BATCH)
        for m in [min(BATCH, len(log) - s)]
    ]


def _stream(spec: FeatureSpec, batches: list[ReadingBatch]) -> tuple[Span, FeatureEngine, int]:
    """Every batch through a fresh engine, then a flush; returns (time, engine, vectors emitted)."""
    engine = FeatureEngine(spec)
    emitted = 0
    with Span() as span:
        for batch in batches:
            emitted += len(engine.update(batch)[0])
        emitted += len(engine.flush())
    return span, engine, emitted


def naive_features(log: pd.DataFrame, spec: FeatureSpec) -> list[np.ndarray]:
    """The baseline: per reading, append it to its asset's history, then pandas ``rolling`` mean,
    std, min and max of each signal over each time window; the newest row is the reading's vector."""
    signals = list(spec.used_signals)
    history: dict[str, list[tuple]] = {}
    out = []
    for row in log.itertuples(index=False):
        rows = history.setdefault(row.asset_id, [])
        rows.append((pd.Timestamp(row.ts, unit="s"), *(getattr(row, s) for s in signals)))
        frame = pd.DataFrame(rows, columns=["ts", *signals]).set_index("ts")
        vector = [
            frame.rolling(f"{int(w.length)}s").agg(["mean", "std", "min", "max"]).iloc[-1].to_numpy()
            for w in spec.windows
        ]
        out.append(np.concatenate(vector))
    return out


def _state_rows(spec: FeatureSpec, count: int) -> list[dict[str, Any]]:
    seconds = int(np.clip(count // STATE_MOTORS, *STATE_SECONDS))
    log = motor_log(STATE_MOTORS * seconds, STATE_MOTORS)
    _, engine, _ = _stream(spec, _batches(log, spec.signals))
    windows = ", ".join(w.name for w in spec.windows)
    note = f"{STATE_MOTORS:,} motors, {seconds} s at 1 reading/s, windows {windows}"
    return [
        {
            "benchmark": "feature state per motor",
            "value": engine.state_bytes() / engine.assets / 1000,
            "unit": "KB",
            "target": "<= 200",
            "note": f"{note}; rings and waiting readings of the tracked motors",
        },
        {
            "benchmark": "feature state per motor, arrays as allocated",
            "value": engine.allocated_bytes() / engine.assets / 1000,
            "unit": "KB",
            "target": "<= 200",
            "note": f"spare capacity included ({engine.capacity:,} slots for {engine.assets:,} motors)",
        },
    ]


def run(count: int, bus: Any, console: Any) -> list[dict[str, Any]]:
    """The feature engines' rows: ``count`` readings (streaming: at most ``STREAM_MAX``)."""
    profile = load_profile("motor")
    spec = FeatureSpec.from_profile(profile)
    n = min(count, STREAM_MAX)
    log = motor_log(n, STREAM_MOTORS)
    span, _, emitted = _stream(spec, _batches(log, spec.signals))
    what = f"{n:,} readings of {STREAM_MOTORS:,} motors at 1/s, batches of {BATCH:,}"
    rows = rate_rows(
        "streaming engine", span, n, f"{what}; {emitted:,} vectors of {len(spec.names)} features", ">= 100000"
    )
    stream_cpu = span.rates(n)[1]
    compute_features(log.head(1000), spec)  # loads the compiled loops (once per process; see batch.py)
    with Span() as span:
        compute_features(log, spec)
    rows += rate_rows("batch engine", span, n, what, ">= 1000000")
    training = motor_log(n, TRAINING_MOTORS, TRAINING_INTERVAL_S)
    with Span() as span:
        compute_features(training, spec)
    rows += rate_rows(
        "batch engine, training log", span, n, f"{n:,} readings of 200 motors at a 1-minute interval"
    )
    rows += _state_rows(spec, count)
    naive_log = motor_log(NAIVE_READINGS, NAIVE_MOTORS)
    with Span() as span:
        naive_features(naive_log, spec)
    naive = rate_rows(
        "naive: pandas rolling per reading",
        span,
        NAIVE_READINGS,
        f"{NAIVE_READINGS:,} readings of {NAIVE_MOTORS} motors (short histories: it slows as they grow); "
        "mean/std/min/max only",
    )
    rows += naive
    rows.append(
        {
            "benchmark": "streaming engine / naive (CPU-seconds)",
            "value": stream_cpu / naive[1]["value"],
            "unit": "x",
            "note": "same run; the engine also computes slope, z-score, EWMA, cross features",
        }
    )
    if console is not None:
        console.print(f"features: streaming {stream_cpu:,.0f} readings per CPU-second")
    return rows
