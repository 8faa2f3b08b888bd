"""The fast Predictor: a trained bundle (two ONNX graphs + numpy blend) behind one batched call.

``predict(last, seq)`` scores ``n`` rows at once: ``last`` (n, f) is each row's current feature vector
(for the forest), ``seq`` (n, T, f) its last ``T`` vectors, oldest first (for the LSTM). Sequences of an
asset seen for fewer than ``T`` emissions are left-padded by repeating its first vector
(:mod:`models.sequences`, the training side does the same). NaN features are replaced by the training
medians. Neither TensorFlow nor scikit-learn is imported, nor onnx (0.7 s to import): onnxruntime and
numpy run the graphs the bundle holds.

``predict`` also returns each row's :class:`LSTMState`, the LSTM's memory after its sequence's first
``T - 1`` vectors. ``predict_step(last, state)`` scores rows whose sequence is such a known history
followed by ``last``: one LSTM step instead of ``T``, with the same bits as ``predict``.
``begin(last)`` does both in one batch (:class:`Inference`): the forest starts at once on every
row, then each row takes its whole sequence or its step.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ingest.schemas import Driver
from models.ensemble import Blend, Calibrator
from models.lstm import stateful_graphs

FOREST_FILE = "forest.onnx"
LSTM_FILE = "lstm.onnx"
# The LSTM split for serving (:func:`models.lstm.stateful_graphs`): with its state, and one step.
LSTM_STATE_FILE = "lstm_with_state.onnx"
LSTM_STEP_FILE = "lstm_step.onnx"
ARRAYS_FILE = "arrays.npz"
META_FILE = "model.json"


@dataclass(frozen=True, slots=True)
class LSTMState:
    """The LSTM's memory (hidden and cell state, each (n, H) float32) after the first ``T - 1``
    vectors of each row's sequence."""

    h: np.ndarray
    c: np.ndarray


@dataclass(frozen=True, slots=True)
class Prediction:
    """Calibrated risk of failure within the horizon, and remaining useful life in ``rul_unit``;
    ``state``: each row's :class:`LSTMState` (from :meth:`Predictor.predict` only)."""

    risk: np.ndarray
    rul: np.ndarray
    state: LSTMState | None = None


@dataclass(frozen=True)
class ModelBundle:
    """Everything serving needs, as written into a registry version directory."""

    forest_onnx: bytes
    lstm_onnx: bytes
    # lstm_onnx split as the scorer runs it, (with_state, step): derived once when the bundle is made.
    lstm_stateful: tuple[bytes, bytes]
    feature_names: tuple[str, ...]
    fingerprint: str
    feature_spec: dict[str, Any]
    seq_len: int
    rul_unit: str
    rul_cap: float
    horizon: float
    fill: np.ndarray  # per-feature training median, replaces NaN
    baseline: np.ndarray  # per-feature median of healthy training rows (p_fail == 0)
    scale: np.ndarray  # per-feature spread of healthy training rows
    importance: np.ndarray  # forest classifier's feature importances
    # Event time between the vectors of a training sequence (the training log's cadence): the scorer
    # keeps an asset's history at that step, whatever its live cadence. 0: every vector.
    seq_step: float = 0.0
    blend: Blend | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def with_blend(self, blend: Blend) -> ModelBundle:
        from dataclasses import replace

        return replace(self, blend=blend)

    def write(self, directory: Path) -> None:
        if self.blend is None:
            raise ValueError("bundle has no fitted blend: fit the ensemble before saving")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / FOREST_FILE).write_bytes(self.forest_onnx)
        (directory / LSTM_FILE).write_bytes(self.lstm_onnx)
        (directory / LSTM_STATE_FILE).write_bytes(self.lstm_stateful[0])
        (directory / LSTM_STEP_FILE).write_bytes(self.lstm_stateful[1])
        np.savez(
            directory / ARRAYS_FILE,
            fill=self.fill,
            baseline=self.baseline,
            scale=self.scale,
            importance=self.importance,
            calib_x=self.blend.calibrator.x,
            calib_y=self.blend.calibrator.y,
        )
        meta = {
            "feature_names": list(self.feature_names),
            "fingerprint": self.fingerprint,
            "feature_spec": self.feature_spec,
            "seq_len": self.seq_len,
            "seq_step": self.seq_step,
            "rul_unit": self.rul_unit,
            "rul_cap": self.rul_cap,
            "horizon": self.horizon,
            "risk_weight": self.blend.risk_weight,
            "rul_weight": self.blend.rul_weight,
            "calibration": self.blend.calibrator.method,
            **self.extra,
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def read(cls, directory: Path) -> ModelBundle:
        meta = json.loads((directory / META_FILE).read_text())
        arr = np.load(directory / ARRAYS_FILE)
        blend = Blend(
            meta["risk_weight"],
            meta["rul_weight"],
            meta["rul_cap"],
            Calibrator(arr["calib_x"], arr["calib_y"], meta["calibration"]),
        )
        known = {
            "feature_names",
            "fingerprint",
            "feature_spec",
            "seq_len",
            "seq_step",
            "rul_unit",
            "rul_cap",
            "horizon",
            "risk_weight",
            "rul_weight",
            "calibration",
        }
        lstm_onnx = (directory / LSTM_FILE).read_bytes()
        state, step = directory / LSTM_STATE_FILE, directory / LSTM_STEP_FILE
        if state.is_file() and step.is_file():
            stateful = (state.read_bytes(), step.read_bytes())
        else:  # a version saved before they were: derived here, as then
            stateful = stateful_graphs(lstm_onnx)
        return cls(
            forest_onnx=(directory / FOREST_FILE).read_bytes(),
            lstm_onnx=lstm_onnx,
            lstm_stateful=stateful,
            feature_names=tuple(meta["feature_names"]),
            fingerprint=meta["fingerprint"],
            feature_spec=meta["feature_spec"],
            seq_len=int(meta["seq_len"]),
            seq_step=float(meta.get("seq_step", 0.0)),  # versions saved before it: every vector
            rul_unit=meta["rul_unit"],
            rul_cap=float(meta["rul_cap"]),
            horizon=float(meta["horizon"]),
            fill=arr["fill"],
            baseline=arr["baseline"],
            scale=arr["scale"],
            importance=arr["importance"],
            blend=blend,
            extra={k: v for k, v in meta.items() if k not in known},
        )


MIN_SPLIT_ROWS = 128  # a batch is split across threads only when each part has at least this many rows


def _session(model: bytes):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # One thread per run: a scorer with more cores splits its batch across them instead (see Predictor).
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


class Predictor:
    """Batched scoring of a bundle. ``threads``: cores to score on (1: one scorer per core).

    With more threads each graph's run on a batch is cut into that many parts, each on its own
    thread (onnxruntime releases the GIL). A row's scores do not depend on the rows beside it, so
    they are exactly those of one thread; and two threads split the work better than onnxruntime's
    own intra-op threads (the LSTM's 20 small steps each synchronise them): 56-63k against 56-57k
    rows/s here, 31-32k on one. The forest's parts start first (:meth:`begin`), so they run while
    the caller prepares the LSTM's inputs."""

    def __init__(self, bundle: ModelBundle, version: str = "unsaved", threads: int = 1) -> None:
        self.bundle = bundle
        self.version = version
        self.feature_names = bundle.feature_names
        self.seq_len = bundle.seq_len
        self.seq_step = bundle.seq_step
        self.rul_unit = bundle.rul_unit
        self._fill = bundle.fill.astype(np.float32)
        self._forest = _session(bundle.forest_onnx)
        with_state, step = bundle.lstm_stateful
        self._lstm = _session(with_state)
        self._step = _session(step)
        self.state_size = int(self._step.get_inputs()[1].shape[1])
        self.threads = max(1, threads)
        self._pool = ThreadPoolExecutor(self.threads, "motorwatch-inference") if self.threads > 1 else None

    def _clean(self, a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, dtype=np.float32)
        nan = np.isnan(a)
        return np.where(nan, self._fill, a) if nan.any() else a

    def _run_forest(self, last: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(self._forest.run(None, {"x": last}))

    def _run_lstm(self, seq: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(self._lstm.run(None, {"seq": seq}))

    def _run_step(self, last: np.ndarray, h: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(self._step.run(None, {"x": last, "state_h": h, "state_c": c}))

    def _start(self, run, *arrays: np.ndarray) -> Callable[[], tuple[np.ndarray, ...]]:
        """Start ``run(*arrays)``, the rows cut across the threads when there are enough of them;
        the returned call waits for the outputs (at once with one part: it ran here)."""
        n = len(arrays[0])
        parts = min(self.threads, n // MIN_SPLIT_ROWS)
        if self._pool is None or parts < 2:
            done = run(*arrays)
            return lambda: done
        cuts = np.linspace(0, n, parts + 1).astype(int).tolist()
        pending = [self._pool.submit(run, *(a[lo:hi] for a in arrays)) for lo, hi in itertools.pairwise(cuts)]
        return lambda: tuple(map(np.concatenate, zip(*(f.result() for f in pending), strict=True)))

    def _check(self, last: np.ndarray, seq_shape: tuple[int, ...] | None) -> None:
        """``last`` (n, f) with the model's f features, and ``seq`` (n, T, f) unless its shape is None."""
        n, f = np.shape(last)
        if f != len(self.feature_names) or seq_shape not in (None, (n, self.seq_len, f)):
            raise ValueError(
                f"expected last (n, {len(self.feature_names)}) and seq (n, {self.seq_len}, "
                f"{len(self.feature_names)}), got {np.shape(last)} and {seq_shape}"
            )

    @staticmethod
    def _components(pf, rf, pl, rl) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        # float32 sums of tree votes can land a hair above 1: probabilities stay probabilities.
        return {"forest": (np.clip(pf, 0.0, 1.0), rf), "lstm": (np.clip(pl, 0.0, 1.0), rl)}

    def begin(self, last: np.ndarray) -> Inference:
        """Start scoring ``n`` rows whose current feature vectors are ``last`` (n, f): the forest runs
        on the inference threads from now on, while the caller gathers each row's LSTM input and
        hands it to the returned :class:`Inference`."""
        self._check(last, None)
        return Inference(self, self._clean(last))

    def components(self, last: np.ndarray, seq: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Each model's own ``(p_fail, rul)`` before blending and calibration (for evaluation)."""
        run = self.begin(last)
        run.sequences(slice(None), seq)
        return run.components()

    def predict(self, last: np.ndarray, seq: np.ndarray) -> Prediction:
        """Calibrated ensemble risk and RUL for ``n`` rows, and each row's LSTM state after the first
        ``T - 1`` vectors of its sequence."""
        run = self.begin(last)
        state = run.sequences(slice(None), seq)
        return Prediction(*run.result(), state)

    def predict_step(self, last: np.ndarray, state: LSTMState) -> Prediction:
        """:meth:`predict` for rows whose sequence is a history of ``T - 1`` vectors whose ``state``
        is known, followed by ``last``: the same scores, for a ``T``-th of the LSTM's work."""
        run = self.begin(last)
        run.steps(slice(None), state)
        return Prediction(*run.result())

    def combine(self, components: dict[str, tuple[np.ndarray, np.ndarray]]) -> Prediction:
        """The ensemble's calibrated risk and RUL from :meth:`components`."""
        return Prediction(*self._blend(components))

    def _blend(self, components: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        blend = self.bundle.blend
        if blend is None:
            raise ValueError("this bundle has no fitted ensemble yet: only components() can score it")
        (pf, rf), (pl, rl) = components["forest"], components["lstm"]
        return blend.risk(pf, pl), blend.rul(rf, rl)

    def drivers(self, last: np.ndarray, k: int = 3, baseline: np.ndarray | None = None) -> list[list[Driver]]:
        """Top ``k`` features per row by contribution = forest importance x |deviation from healthy baseline|
        in healthy standard deviations. Cheap (numpy over the given rows only): call it for alerting rows.

        ``baseline`` (rows like ``last``): each row's asset's own healthy baseline, NaN where unknown;
        the training fleet's healthy baseline stands in where it is NaN or not given."""
        x = self._clean(np.atleast_2d(last)).astype(np.float64)
        b = self.bundle
        base = np.broadcast_to(b.baseline, x.shape)
        if baseline is not None:
            base = np.where(np.isnan(baseline), base, baseline)
        contrib = b.importance * np.abs(x - base) / b.scale
        top = np.argsort(-contrib, axis=1)[:, :k]
        names = self.feature_names
        return [
            [
                Driver(
                    feature=names[j],
                    value=float(x[i, j]),
                    baseline=float(base[i, j]),
                    contribution=float(contrib[i, j]),
                )
                for j in row
            ]
            for i, row in enumerate(top.tolist())
        ]


class Inference:
    """One batch being scored (:meth:`Predictor.begin`): the forest is running on every row; each row
    then takes the LSTM once, either its whole sequence (:meth:`sequences`) or one step from a known
    state (:meth:`steps`); :meth:`result` blends. A row's scores are the same bits either way, and
    whatever rows share its batch or its thread."""

    def __init__(self, predictor: Predictor, last: np.ndarray) -> None:
        self._predictor, self._last = predictor, last
        if len(last):
            self._forest = predictor._start(predictor._run_forest, last)
        else:
            self._forest = lambda: (np.zeros(0, np.float32),) * 2
        self._lstm: list[tuple[np.ndarray | slice, np.ndarray, np.ndarray]] = []

    def sequences(self, rows: np.ndarray | slice, seq: np.ndarray) -> LSTMState:
        """The LSTM over ``seq`` (k, T, f), the whole sequence of each of ``rows``; returns each row's
        state after the first ``T - 1`` vectors."""
        p = self._predictor
        p._check(self._last[rows], np.shape(seq))
        if len(seq) == 0:
            empty = np.zeros((0, p.state_size), np.float32)
            return LSTMState(empty, empty)
        pl, rl, h, c = p._start(p._run_lstm, p._clean(seq))()
        self._lstm.append((rows, pl, rl))
        return LSTMState(h, c)

    def steps(self, rows: np.ndarray | slice, state: LSTMState) -> None:
        """One LSTM step for ``rows``, each from its history's ``state`` (:meth:`Predictor.predict_step`)."""
        p, last = self._predictor, self._last[rows]
        if np.shape(state.h) != (len(last), p.state_size) or np.shape(state.c) != np.shape(state.h):
            raise ValueError(f"expected states (n, {p.state_size}), got {np.shape(state.h)}")
        if len(last):
            pl, rl = p._start(p._run_step, last, state.h, state.c)()
            self._lstm.append((rows, pl, rl))

    def components(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Each model's own ``(p_fail, rul)`` for every row; each row must have had its LSTM."""
        n = len(self._last)
        pf, rf = self._forest()
        only = self._lstm[0][0] if len(self._lstm) == 1 else None
        if isinstance(only, slice) and only == slice(None):
            _, pl, rl = self._lstm[0]  # every row at once, in order (predict, predict_step)
        else:
            pl, rl, done = np.empty(n, np.float32), np.empty(n, np.float32), np.zeros(n, bool)
            for rows, p, r in self._lstm:
                pl[rows], rl[rows], done[rows] = p, r, True
            if not done.all():
                raise ValueError(f"{n - done.sum()} of {n} rows have had no LSTM (sequences or steps)")
        return self._predictor._components(pf, rf, pl, rl)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated ensemble risk and RUL of every row."""
        return self._predictor._blend(self.components())
