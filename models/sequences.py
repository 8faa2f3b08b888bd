"""The LSTM's input: for a row, the asset's last ``T`` feature vectors up to and including it.

One definition for training and serving. A row with fewer than ``T`` earlier vectors of its asset is
**left-padded by repeating the asset's first vector** (the scorer does the same for a new asset), so an
early row looks like an asset that has been steady since it was first seen.

>>> import numpy as np
>>> x = np.arange(5, dtype=np.float32)[:, None]          # rows of one frame, sorted by asset then time
>>> windows(x, np.array(["a", "a", "a", "b", "b"]), np.array([1, 4]), seq_len=3)[:, :, 0].tolist()
[[0.0, 0.0, 1.0], [3.0, 3.0, 4.0]]
"""

from __future__ import annotations

import numpy as np


def asset_starts(asset_id: np.ndarray) -> np.ndarray:
    """For each row of a frame sorted by asset (then time), the index of its asset's first row."""
    n = len(asset_id)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    new = np.ones(n, dtype=bool)
    new[1:] = asset_id[1:] != asset_id[:-1]
    return np.maximum.accumulate(np.where(new, np.arange(n), 0))


def sequence_step(asset_id: np.ndarray, ts: np.ndarray) -> float:
    """The event time between an asset's consecutive rows, as training windows see it: the median
    gap of a frame sorted by asset then time (0 without two rows of one asset)."""
    same = asset_id[1:] == asset_id[:-1]
    gaps = np.diff(ts)[same]
    return float(np.median(gaps)) if len(gaps) else 0.0


def window_index(rows: np.ndarray, starts: np.ndarray, seq_len: int) -> np.ndarray:
    """``(len(rows), seq_len)`` indices into the frame: each row's window, left-padded at its asset start."""
    lags = np.arange(seq_len - 1, -1, -1)
    return np.maximum(rows[:, None] - lags[None, :], starts[rows][:, None])


def windows(values: np.ndarray, asset_id: np.ndarray, rows: np.ndarray, seq_len: int) -> np.ndarray:
    """``(len(rows), seq_len, f)`` windows of ``values`` (rows sorted by asset, then time)."""
    return values[window_index(np.asarray(rows), asset_starts(np.asarray(asset_id)), seq_len)]
