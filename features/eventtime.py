"""Event-time rules shared by both engines: which readings are late, which are duplicates, which emit.

Per asset, in delivery order: the asset's clock is the newest event time accepted so far. A reading
older than ``clock - grace`` is late. A reading with the same (asset, ts) as one accepted before is a
duplicate, dropped (a late one counts as late). A clock never moves back, so a reading's fate
depends only on the readings of its asset delivered before it, which is what lets the batch engine
decide it for a whole log at once.

>>> import numpy as np
>>> late, dup = late_and_duplicates(np.array([0, 0, 0, 0]), np.array([10.0, 5.0, 9.0, 9.0]), grace=2.0)
>>> late.tolist(), dup.tolist()
([False, True, False, False], [False, False, False, True])
"""

from __future__ import annotations

import numpy as np

from features import compiled


def clock_before(slots: np.ndarray, ts: np.ndarray, clock0: np.ndarray | None = None) -> np.ndarray:
    """Each reading's asset clock just before it (delivery order), starting from ``clock0[slot]``."""
    slots = np.asarray(slots, dtype=np.int64)
    size = max(int(slots.max()) + 1 if len(slots) else 0, 0 if clock0 is None else len(clock0))
    clock = np.full(size, -np.inf)
    if clock0 is not None:
        clock[: len(clock0)] = clock0
    return compiled.running_clock(slots, np.asarray(ts, dtype=np.float64), clock)


def first_occurrences(slots: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """True for the first row of each (slot, ts) pair in row order."""
    n = len(ts)
    order = np.lexsort((ts, slots))  # stable: ties keep row order
    s, t = slots[order], ts[order]
    first = np.ones(n, dtype=bool)
    first[1:] = (s[1:] != s[:-1]) | (t[1:] != t[:-1])
    out = np.empty(n, dtype=bool)
    out[order] = first
    return out


def late_and_duplicates(
    slots: np.ndarray, ts: np.ndarray, grace: float, clock0: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(late, duplicate)`` masks of readings delivered in row order (no readings known before)."""
    late = ts < clock_before(slots, ts, clock0) - grace
    dup = np.zeros(len(ts), dtype=bool)
    ok = np.flatnonzero(~late)
    dup[ok] = ~first_occurrences(slots[ok], ts[ok])
    return late, dup


def emits(first: np.ndarray, ts: np.ndarray, prev_ts: np.ndarray, every: float) -> np.ndarray:
    """Which readings (in event-time order per asset) emit a feature vector: every one when
    ``every == 0``, else the first of each ``every``-long slot of event time, and an asset's first."""
    if every <= 0:
        return np.ones(len(ts), dtype=bool)
    return first | (np.floor(ts / every) != np.floor(prev_ts / every))
