"""Each asset's own healthy baseline, for the drivers of its alerts.

An asset's baseline is the mean of its first ``n`` feature vectors (each feature over its defined
values) since the scorer first saw it or since its latest maintenance, the same convention as the
feature worker's z-score baselines (``baseline_n`` in the profile's ``[features]``). It lives in
memory: after a scorer restart an asset's baseline is re-learnt from the vectors that follow, so
the alert drivers then compare with that asset's state at the restart (the training fleet's
baseline stands in for features without values yet).

>>> import numpy as np
>>> b = AssetBaselines(n_features=2, n=2)
>>> b.add(np.array([0, 0, 0, 1]), np.array([[1.0, np.nan], [3.0, 4.0], [9.0, 9.0], [5.0, 6.0]]))
>>> b.mean(np.array([0, 1, 2])).tolist()
[[2.0, 4.0], [5.0, 6.0], [nan, nan]]
"""

from __future__ import annotations

import numpy as np

from scoring.slots import grown, room_for


class AssetBaselines:
    """Per-slot sums of the first ``n`` vectors of each asset (slots as in :class:`SequenceStore`)."""

    def __init__(self, n_features: int, n: int, capacity: int = 1024) -> None:
        self.n = n
        self.sum = np.zeros((capacity, n_features))
        self.defined = np.zeros((capacity, n_features), dtype=np.int64)
        self.taken = np.zeros(capacity, dtype=np.int64)  # vectors taken so far, up to n

    def add(self, slots: np.ndarray, x: np.ndarray) -> None:
        """Take the rows ``x`` of ``slots`` (stream order) that fall in their asset's first ``n``."""
        if len(slots) and slots.max() >= len(self.taken):
            self._grow(int(slots.max()) + 1)
        if len(slots) == 0 or (self.taken[slots] >= self.n).all():
            return  # the steady state: every asset has its baseline
        order = np.argsort(slots, kind="stable")
        s = slots[order]
        first = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
        rank = np.arange(len(s)) - np.repeat(first, np.diff(np.r_[first, len(s)]))
        take = order[self.taken[s] + rank < self.n]  # still grouped by slot
        if len(take) == 0:
            return
        rows, ts = x[take], slots[take]
        defined = ~np.isnan(rows)
        # Sums per slot by reduceat over the groups: np.add.at on rows is ~100x slower.
        starts = np.flatnonzero(np.r_[True, ts[1:] != ts[:-1]])
        u = ts[starts]
        self.sum[u] += np.add.reduceat(np.where(defined, rows, 0.0), starts, axis=0)
        self.defined[u] += np.add.reduceat(defined.astype(np.int64), starts, axis=0)
        self.taken[u] += np.diff(np.r_[starts, len(ts)])

    def mean(self, slots: np.ndarray) -> np.ndarray:
        """Baseline rows of ``slots``: NaN for a feature with no value yet."""
        slots = np.asarray(slots)
        out = np.full((len(slots), self.sum.shape[1]), np.nan)
        known = slots < len(self.taken)
        d = self.defined[slots[known]]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[known] = np.where(d > 0, self.sum[slots[known]] / d, np.nan)
        return out

    def reset(self, slots: int | np.ndarray) -> None:
        """Maintenance (or a new owner): the asset's next ``n`` vectors are its new baseline."""
        slots = np.asarray(slots)
        slots = slots[slots < len(self.taken)]
        self.sum[slots], self.defined[slots], self.taken[slots] = 0.0, 0, 0

    def _grow(self, needed: int) -> None:
        room = room_for(needed, len(self.taken))
        self.sum, self.defined, self.taken = (grown(a, room) for a in (self.sum, self.defined, self.taken))
