"""Bucket aggregates and the statistics computed from them: the arithmetic both engines share.

A bucket of one signal is 5 numbers: count, sum, sum of squares, min, max (``BUCKET``). A window is
the sum of its buckets plus three position moments for the least-squares slope (``WINDOW``): with
``j = bucket id - first bucket id of the window``, ``NJ = sum(n*j)``, ``NJJ = sum(n*j*j)``,
``SJ = sum(sum*j)``. Values are stored shifted by the asset's first value of the signal, so sums of
squares do not lose the variance to cancellation.

Statistics (per window, at the emitting reading):

- ``mean``, ``std`` (population), ``min``, ``max`` of the readings in the window;
- ``slope``: least squares of value against time, each reading placed at its bucket (per time unit;
  0 while the window's readings all sit in one bucket);
- ``zscore``: ``(mean - baseline mean) / baseline std``; the baseline is the asset's first
  ``baseline_n`` values since its last maintenance (0 until it has them: no evidence of a deviation
  yet); windows, ``last`` and ``ewma`` likewise hold only readings since the last maintenance;
- ``rise_per``: ``(mean(signal) - baseline mean(signal)) / mean(per)`` (0 while undefined);
- ``since_maintenance``: time since the last maintenance, or since the asset's first reading.

A feature is NaN only when its window holds no value of its signal (a silent sensor). The loops
that build buckets and windows are compiled, in :mod:`features.compiled`.

>>> empty_window(()).tolist()
[0.0, 0.0, 0.0, inf, -inf, 0.0, 0.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numba import njit

from features.spec import FeatureSpec, Window

# Bucket fields.
N, S, Q, MN, MX = range(5)
BUCKET = 5
# Window fields: the bucket sums, then the position moments.
W_N, W_S, W_Q, W_MN, W_MX, W_NJ, W_NJJ, W_SJ = range(8)
WINDOW = 8

EMPTY_BUCKET = np.array([0.0, 0.0, 0.0, np.inf, -np.inf])


def empty_window(shape: tuple[int, ...]) -> np.ndarray:
    out = np.zeros((*shape, WINDOW))
    out[..., W_MN] = np.inf
    out[..., W_MX] = -np.inf
    return out


def last_in_window(window: Window, ts: np.ndarray, last_x: np.ndarray, last_t: np.ndarray) -> np.ndarray:
    """``last``: each signal's newest value ``last_x`` (seen at ``last_t``) if it is inside
    ``window`` at ``ts``, else NaN. Both engines pass the spec's first window."""
    lo = np.floor(ts / window.width) - window.buckets + 1
    return np.where(np.floor(last_t / window.width) >= lo[:, None], last_x, np.nan)


@dataclass(slots=True)
class Inputs:
    """Everything a feature vector is computed from, for ``m`` emitting readings (signals in
    ``spec.used_signals`` order; windowed values shifted by ``shift``)."""

    windows: Mapping[str, np.ndarray]  # window name -> (m, signals, WINDOW)
    shift: np.ndarray  # (m, signals)
    last: np.ndarray  # (m, signals) raw value, NaN if none inside the first window
    ewma: np.ndarray  # (m, signals) shifted
    base_mean: np.ndarray  # (m, signals) shifted, NaN until the baseline is complete
    base_std: np.ndarray  # (m, signals)
    ts: np.ndarray  # (m,)
    maintained_at: np.ndarray  # (m,) last maintenance at or before ts, else the asset's first ts


def compute(spec: FeatureSpec, inp: Inputs, out: np.ndarray | None = None) -> np.ndarray:
    """The ``(m, len(spec.names))`` feature matrix, into ``out`` if given. NaN where a feature is
    undefined."""
    col = {s: i for i, s in enumerate(spec.used_signals)}
    widths = {w.name: w.width for w in spec.windows}
    m = len(inp.ts)
    if out is None:
        out = np.empty((m, len(spec.features)), order="F")  # written a column at a time
    cache: dict[tuple[str, str], np.ndarray] = {}

    def mean(window: str, signal: str) -> np.ndarray:
        key = (window, signal)
        if key not in cache:
            agg = inp.windows[window][:, col[signal]]
            cache[key] = agg[:, W_S] / agg[:, W_N]
        return cache[key]

    with np.errstate(divide="ignore", invalid="ignore"):
        for f, feat in enumerate(spec.features):
            kind, c = feat.kind, col.get(feat.signal, 0)
            if kind == "last":
                out[:, f] = inp.last[:, c]
            elif kind == "ewma":
                out[:, f] = inp.ewma[:, c] + inp.shift[:, c]
            elif kind == "since_maintenance":
                out[:, f] = inp.ts - inp.maintained_at
            elif kind == "rise_per":
                rise = mean(feat.window, feat.signal) - inp.base_mean[:, c]
                per = mean(feat.window, feat.other) + inp.shift[:, col[feat.other]]
                out[:, f] = np.where((np.abs(per) > 1e-9) & ~np.isnan(rise), rise / per, 0.0)
            else:
                if kind not in _STAT_CODE:
                    raise ValueError(f"unknown window statistic {kind!r}")
                agg, mu = inp.windows[feat.window][:, c], mean(feat.window, feat.signal)
                base = inp.shift[:, c], inp.base_mean[:, c], inp.base_std[:, c]
                _stat_kernel(_STAT_CODE[kind], agg, mu, *base, widths[feat.window], out[:, f])
    return out


_STAT_CODE = {"mean": 0, "std": 1, "min": 2, "max": 3, "slope": 4, "zscore": 5}


@njit(cache=True, nogil=True, error_model="numpy")
def _stat_kernel(
    code: int,
    agg: np.ndarray,
    mu: np.ndarray,
    shift: np.ndarray,
    base_mean: np.ndarray,
    base_std: np.ndarray,
    width: float,
    out: np.ndarray,
) -> None:
    """One window statistic per row (``code``: see ``_STAT_CODE``), in one pass: NaN where the
    window holds no value, 0 where the statistic is undefined (one bucket, no baseline spread)."""
    for i in range(len(out)):
        n = agg[i, W_N]
        if code == 0:
            out[i] = mu[i] + shift[i]
        elif code == 1:
            v = agg[i, W_Q] / n - mu[i] * mu[i]
            out[i] = np.sqrt(v) if not v < 0.0 else 0.0
        elif code == 2 or code == 3:
            out[i] = np.nan if n == 0 else agg[i, W_MN if code == 2 else W_MX] + shift[i]
        elif code == 4:
            nj = agg[i, W_NJ]
            den = n * agg[i, W_NJJ] - nj * nj  # 0 when every reading sits in one bucket
            if den > 0.5:
                out[i] = (n * agg[i, W_SJ] - nj * agg[i, W_S]) / den / width
            else:
                out[i] = np.nan if n == 0 else 0.0
        else:
            sd = base_std[i]
            if sd > 1e-12:
                out[i] = (mu[i] - base_mean[i]) / sd
            else:
                out[i] = np.nan if n == 0 else 0.0
