"""Per-asset sequence state for the LSTM: the last ``T`` feature vectors of every asset, in one array.

All assets share one ``(capacity, T, f)`` float32 array (a slot per asset, grown by doubling), so a
batch is appended and its sequences gathered with a handful of vectorised numpy operations, even
when one asset appears many times in a batch (a replayed log). A sequence shorter than ``T`` is
left-padded by repeating its first vector, as the model was trained.

>>> import numpy as np
>>> store = SequenceStore(seq_len=3, n_features=1)
>>> seq, keep = store.push(["a", "a", "b", "a"], np.array([1.0, 2, 3, 4]), np.array([[1.0], [2], [3], [4]]))
>>> seq[:, :, 0].tolist()
[[1.0, 1.0, 1.0], [1.0, 1.0, 2.0], [3.0, 3.0, 3.0], [1.0, 2.0, 4.0]]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class SequenceStore:
    """The last ``seq_len`` vectors of each asset, with the event time of the newest one."""

    def __init__(self, seq_len: int, n_features: int, capacity: int = 1024) -> None:
        self.seq_len = seq_len
        self.n_features = n_features
        self.slot: dict[str, int] = {}
        # buf[s] holds asset s's vectors oldest -> newest; the newest count[s] (<= T) are valid.
        self.buf = np.zeros((capacity, seq_len, n_features), dtype=np.float32)
        self.count = np.zeros(capacity, dtype=np.int64)
        self.last_ts = np.full(capacity, -np.inf)

    def __len__(self) -> int:
        return len(self.slot)

    def slots(self, asset_ids: Sequence[str]) -> np.ndarray:
        """Slot of each asset id, allocating slots for new assets."""
        get, table = self.slot.get, self.slot
        out = np.empty(len(asset_ids), dtype=np.int64)
        for i, aid in enumerate(asset_ids):
            s = get(aid)
            if s is None:
                s = table[aid] = len(table)
            out[i] = s
        if len(table) > len(self.count):
            self._grow(len(table))
        return out

    def push(self, asset_ids: Sequence[str], ts: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Append rows ``x`` (n, f) in stream order; return ``(seq (m, T, f), keep (n,) bool)``.

        ``keep`` marks rows newer than everything already stored for their asset; older rows are
        redelivered duplicates (at-least-once) and change nothing. ``seq[j]`` is the sequence ending
        at the ``j``-th kept row."""
        slots = self.slots(asset_ids)
        keep = self._fresh(slots, np.asarray(ts, dtype=np.float64))
        if not keep.all():
            slots, ts, x = slots[keep], np.asarray(ts)[keep], x[keep]
        n, t_len = len(slots), self.seq_len
        if n == 0:
            return np.empty((0, t_len, self.n_features), dtype=np.float32), keep
        # Group rows by asset (stable: stream order within an asset).
        order = np.argsort(slots, kind="stable")
        sorted_slots = slots[order]
        first = np.flatnonzero(np.r_[True, sorted_slots[1:] != sorted_slots[:-1]])
        uniq = sorted_slots[first]
        sizes = np.diff(np.r_[first, n])
        rank = np.arange(n) - np.repeat(first, sizes)
        # One segment per asset: its stored history (T rows) followed by its new rows.
        seg_start = np.r_[0, np.cumsum(t_len + sizes)[:-1]]
        combined = np.empty((len(uniq) * t_len + n, self.n_features), dtype=np.float32)
        hist_pos = (seg_start[:, None] + np.arange(t_len)).ravel()
        combined[hist_pos] = self.buf[uniq].reshape(-1, self.n_features)
        group = np.repeat(np.arange(len(uniq)), sizes)
        new_pos = seg_start[group] + t_len + rank
        combined[new_pos] = x[order]
        # Sequence of each new row: the T positions ending at it, clamped to the first valid one.
        first_valid = seg_start + t_len - self.count[uniq]
        window = new_pos[:, None] - (t_len - 1) + np.arange(t_len)
        window = np.maximum(window, first_valid[group][:, None])
        seq_sorted = combined[window]
        seq = np.empty_like(seq_sorted)
        seq[order] = seq_sorted
        # New state: the last T rows of each segment.
        tail = (seg_start + sizes)[:, None] + np.arange(t_len)
        self.buf[uniq] = combined[tail]
        self.count[uniq] = np.minimum(self.count[uniq] + sizes, t_len)
        np.maximum.at(self.last_ts, slots, np.asarray(ts, dtype=np.float64))
        return seq, keep

    def latest(self, asset_ids: Sequence[str]) -> np.ndarray:
        """The newest stored vector of each asset (zeros for an asset never seen)."""
        slots = self.slots(asset_ids)
        return self.buf[slots, -1]

    def _fresh(self, slots: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Rows newer than their asset's stored state and than the asset's previous row in the batch."""
        keep = ts > self.last_ts[slots]
        if len(slots) > 1:
            order = np.argsort(slots, kind="stable")
            s, t = slots[order], ts[order]
            same = s[1:] == s[:-1]
            later = np.ones(len(s), dtype=bool)
            later[1:] = ~same | (t[1:] > t[:-1])
            keep &= later[np.argsort(order)]
        return keep

    def _grow(self, needed: int) -> None:
        cap = max(needed, 2 * len(self.count))
        extra = cap - len(self.count)
        self.buf = np.concatenate([self.buf, np.zeros((extra, *self.buf.shape[1:]), dtype=np.float32)])
        self.count = np.concatenate([self.count, np.zeros(extra, dtype=np.int64)])
        self.last_ts = np.concatenate([self.last_ts, np.full(extra, -np.inf)])
