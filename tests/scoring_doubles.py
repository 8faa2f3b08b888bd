"""Test doubles and helpers for the scorer tests.

``DoublePredictor`` is a small, honest stand-in for models.inference.Predictor: a plain deterministic
function of the features (risk = feature ``a``, RUL = 100 x the mean of ``b`` over the sequence), so
the scorer's batching, sequences, policy wiring, outputs, offsets and hot reload can be tested
without training a model. Its LSTM state is the ``b`` of a sequence's first ``T - 1`` vectors, so a
row scored from a wrong remembered state gets a wrong RUL. The real-model tests use the registry.
"""

from __future__ import annotations

import uuid

import numpy as np

from ingest.profiles import load_profile
from ingest.schemas import Driver, Features, decode_many, encode
from models.inference import LSTMState
from scoring.worker import Scorer, ScorerConfig

NAMES = ("a", "b", "c")


class DoublePredictor:
    """risk = a (clipped), rul = 100 * mean of b over the sequence (so the sequence matters)."""

    def __init__(self, version: str, seq_len: int = 4, seq_step: float = 0.0) -> None:
        self.version, self.seq_len, self.feature_names, self.rul_unit = version, seq_len, NAMES, "h"
        self.seq_step = seq_step
        self.state_size = seq_len - 1
        self.calls: list[int] = []
        self.steps: list[int] = []

    def begin(self, last: np.ndarray) -> DoubleInference:
        assert last.shape[1:] == (3,)
        return DoubleInference(self, np.nan_to_num(last))  # the real one fills NaN with training medians

    def drivers(self, last: np.ndarray, k: int = 3, baseline: np.ndarray | None = None) -> list[list[Driver]]:
        """Deviation from the asset's baseline (0 where none is given), largest first."""
        last = np.nan_to_num(last)  # the real one fills NaN with training medians
        base = np.zeros_like(last) if baseline is None else np.nan_to_num(baseline)
        dev = np.abs(last - base)
        top = np.argsort(-dev, axis=1, kind="stable")[:, :k]
        return [
            [
                Driver(feature=NAMES[j], value=float(x[j]), baseline=float(b[j]), contribution=float(d[j]))
                for j in idx
            ]
            for x, b, d, idx in zip(last, base, dev, top.tolist(), strict=True)
        ]


class DoubleInference:
    """:class:`models.inference.Inference` of the double: every row must get its b's exactly once."""

    def __init__(self, predictor: DoublePredictor, last: np.ndarray) -> None:
        self.predictor, self.last = predictor, last
        self.rul = np.full(len(last), np.nan)

    def sequences(self, rows: np.ndarray, seq: np.ndarray) -> LSTMState:
        assert seq.shape == (len(rows), self.predictor.seq_len, 3)
        self.predictor.calls.append(len(rows))
        self._rul(rows, seq[:, :, 1])
        return LSTMState(seq[:, :-1, 1].copy(), np.zeros((len(rows), self.predictor.state_size), np.float32))

    def steps(self, rows: np.ndarray, state: LSTMState) -> None:
        assert state.h.shape == (len(rows), self.predictor.state_size)
        self.predictor.steps.append(len(rows))
        self._rul(rows, np.concatenate([state.h, self.last[rows, 1:2]], axis=1))

    def _rul(self, rows: np.ndarray, b: np.ndarray) -> None:
        assert np.isnan(self.rul[rows]).all(), "a row scored twice"
        self.rul[rows] = 100.0 * np.nan_to_num(b).mean(axis=1)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        assert not np.isnan(self.rul).any(), "a row without its sequence"
        return np.clip(self.last[:, 0], 0, 1).astype(np.float64), self.rul


class DoubleRegistry:
    def __init__(self, version: str = "v0001", seq_step: float = 0.0) -> None:
        self.latest = version
        self.seq_step = seq_step
        self.loaded: list[str] = []
        self.predictors: list[DoublePredictor] = []

    def latest_version(self) -> str | None:
        return self.latest

    def load(self, version: str | None = None, spec=None, threads: int = 1) -> DoublePredictor:
        self.loaded.append(version)
        self.predictors.append(DoublePredictor(version or self.latest, seq_step=self.seq_step))
        return self.predictors[-1]


def features(asset: str, ts: float, a: float, b: float = 0.9, stale: bool = False) -> bytes:
    return encode(Features(asset_id=asset, ts=ts, features={"a": a, "b": b, "c": 0.5}, stale=stale))


def drain(scorer: Scorer, max_records: int | None = None) -> int:
    total = 0
    while n := scorer.run_once(max_records=max_records, timeout_s=0.0):
        total += n
    return total


def read(bus, topic: str, cls):
    consumer = bus.consumer([topic], f"reader-{uuid.uuid4()}")
    out = []
    while batch := consumer.poll_batch(100_000, 0.0):
        pairs, rejects = decode_many([r.value for r in batch], cls)
        assert not rejects
        out.extend(m for _, m in pairs)
    return out


def make_scorer(bus, registry, tmp_path=None, **kw) -> Scorer:
    cfg = ScorerConfig(
        group_id=kw.pop("group_id", "scorer"),
        reload_interval_s=0.0,
        schedule_out=tmp_path / "plan.json" if tmp_path else None,
        **kw,
    )
    return Scorer(bus, load_profile("motor"), registry, cfg)
