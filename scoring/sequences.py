"""Per-asset sequence state for the LSTM: the last ``T`` feature vectors of every asset, in one array.

All assets share one ``(capacity, T, f)`` float32 array (a slot per asset, grown as assets arrive:
:mod:`scoring.slots`), so a batch is appended and its sequences gathered with a handful of
vectorised numpy operations, even when one asset appears many times in a batch (a replayed log).
A sequence shorter than ``T`` is left-padded by repeating its first vector, as the model was
trained.

>>> import numpy as np
>>> store = SequenceStore(seq_len=3, n_features=1)
>>> seq, keep = store.push(["a", "a", "b", "a"], np.array([1.0, 2, 3, 4]), np.array([[1.0], [2], [3], [4]]))
>>> seq[:, :, 0].tolist()
[[1.0, 1.0, 1.0], [1.0, 1.0, 2.0], [3.0, 3.0, 3.0], [1.0, 2.0, 4.0]]

With a ``step`` (the event time between the vectors of the model's training sequences, in its
bundle), an asset's history keeps a vector only once ``step`` has passed since the one kept before
(within ``STEP_TOLERANCE``), and a row's sequence is the last ``T - 1`` kept vectors and the row
itself: a model trained on 5-minute logs sees 5-minute steps when it scores 1 Hz readings.

Every row also gets a ``prefix`` key: which history its first ``T - 1`` vectors are (the count of
vectors its asset has kept so far; a row with no history pads itself with copies of itself, which
are the prefix of the history its own vector opens, so it gets that one's key). Rows with the
same key share the LSTM's memory after that history: the store keeps each asset's newest such
state (:meth:`remember`), so the next rows on that history need one LSTM step, not ``T``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from scoring.slots import grown, room_for

_FEW_REPEATS = 4  # up to this many rows per asset, shifting windows in rounds moves less memory
STEP_TOLERANCE = 0.1  # a vector is kept once 90 % of the step has passed: sampling jitter keeps them all
# The per-slot arrays, with what a new slot starts with.
_SLOT_START = {
    "buf": 0.0,
    "count": 0,
    "newest": 0.0,
    "kept_ts": -np.inf,
    "last_ts": -np.inf,
    "last_marker_ts": -np.inf,
    "version": 0,
    "state_key": -1,
    "state_h": 0.0,
    "state_c": 0.0,
}


@dataclass(frozen=True, slots=True)
class Sequences:
    """What :meth:`SequenceStore.append` returns for ``n`` rows. Each row's sequence is gathered only
    when asked (:meth:`take`): a scorer stepping from remembered states needs few of them.

    Row i's sequence is its asset's last ``T - 1`` kept vectors before it, then the row itself:
    ``vectors[kept[before[i] - T + 1 : before[i]]]`` (indices below ``first[i]``, its asset's first
    kept entry, clamped to it: a short history is left-padded with its first vector), then
    ``vectors[at[i]]``. A row with no kept vector before it pads itself."""

    seq_len: int  # T
    vectors: np.ndarray  # (m, f) float32
    kept: np.ndarray  # (k,) positions in ``vectors`` of the kept entries, in order
    before: np.ndarray  # (n,) kept entries before each row
    first: np.ndarray  # (n,) the index in ``kept`` of each row's asset's first kept entry
    at: np.ndarray  # (n,) the position of each row's own vector
    # (n,) int64: the history key of each sequence's first T - 1 vectors. A row with no kept vector
    # before it pads itself: T - 1 copies of itself, which are exactly the prefix of the history its
    # own vector opens (a short history is left-padded with its first vector), so that history's
    # key; -1 if not kept.
    prefix: np.ndarray

    @classmethod
    def of(cls, seq: np.ndarray, prefix: np.ndarray) -> Sequences:
        """Sequences already gathered, ``seq`` (n, T, f)."""
        n, t_len, f = seq.shape
        starts = np.arange(n) * t_len
        last = starts + t_len - 1
        return cls(t_len, seq.reshape(n * t_len, f), np.arange(n * t_len), last, starts, last, prefix)

    def take(self, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """The sequences of ``rows`` (all by default), (len(rows), T, f)."""
        before, first, at = self.before[rows], self.first[rows], self.at[rows]
        t_len = self.seq_len
        lags = before[:, None] - (t_len - 1) + np.arange(t_len - 1)
        window = np.empty((len(at), t_len), dtype=np.int64)
        window[:, :-1] = self.kept[np.minimum(np.maximum(lags, first[:, None]), len(self.kept) - 1)]
        window[:, -1] = at
        alone = before == first  # no kept entry of its asset before it: the row pads itself
        window[alone, :-1] = at[alone, None]
        return self.vectors[window]


class SequenceStore:
    """The last ``seq_len`` vectors of each asset, with the event time of the newest one, and the
    LSTM memory (``state_size`` floats twice) after its newest history."""

    def __init__(
        self, seq_len: int, n_features: int, capacity: int = 1024, step: float = 0.0, state_size: int = 0
    ) -> None:
        self.seq_len = seq_len
        self.n_features = n_features
        self.step = step
        self.slot: dict[str, int] = {}
        # Per slot (allocated empty, then grown to ``capacity``; a new slot starts as _SLOT_START):
        # buf[s] holds asset s's kept vectors oldest -> newest; the newest count[s] (<= T) are valid.
        self.buf = np.empty((0, seq_len, n_features), dtype=np.float32)
        self.count = np.empty(0, dtype=np.int64)
        self.newest = np.empty((0, n_features), dtype=np.float32)  # kept or not
        self.kept_ts = np.empty(0)  # event time of the newest kept vector
        self.last_ts = np.empty(0)
        self.last_marker_ts = np.empty(0)  # newest stale marker admitted
        self.version = np.empty(0, dtype=np.int64)  # vectors ever kept: the history's key
        self.state_key = np.empty(0, dtype=np.int64)  # history whose state is remembered
        self.state_h = np.empty((0, state_size), dtype=np.float32)
        self.state_c = np.empty((0, state_size), dtype=np.float32)
        self._grow(capacity)

    def __len__(self) -> int:
        return len(self.slot)

    def slots(self, asset_ids: Sequence[str]) -> np.ndarray:
        """Slot of each asset id, allocating slots for new assets."""
        table = self.slot
        found = list(map(table.get, asset_ids))
        if None in found:
            for i, aid in enumerate(asset_ids):
                if found[i] is None:
                    found[i] = table.setdefault(aid, len(table))
            if len(table) > len(self.count):
                self._grow(len(table))
        return np.array(found, dtype=np.int64)

    def push(self, asset_ids: Sequence[str], ts: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`admit` then :meth:`append` the admitted rows: ``(seq (m, T, f), keep (n,) bool)``."""
        slots, keep = self.admit(asset_ids, ts)
        return self.append(slots[keep], x[keep], np.asarray(ts, dtype=np.float64)[keep]).take(), keep

    def admit(
        self, asset_ids: Sequence[str], ts: np.ndarray, stale: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Slots of the rows, and which rows are new: ``(slots (n,), keep (n,) bool)``.

        A row is kept when it is newer than everything admitted before for its asset and than the
        asset's previous row in the batch; older rows are redelivered duplicates (at-least-once)
        and must change nothing. The newest admitted time per asset is remembered.

        Stale markers (``stale`` rows) are compared with the asset's markers only: a marker carries
        its partition's watermark, so the vectors of readings the feature worker released after it
        (held back for the grace period, or delayed in transit) are older than it, yet new."""
        slots = self.slots(asset_ids)
        ts = np.asarray(ts, dtype=np.float64)
        if stale is None or not np.any(stale):
            return slots, self._newer(slots, ts, self.last_ts)
        marker = np.asarray(stale, dtype=bool)
        keep = np.empty(len(ts), dtype=bool)
        keep[~marker] = self._newer(slots[~marker], ts[~marker], self.last_ts)
        keep[marker] = self._newer(slots[marker], ts[marker], self.last_marker_ts)
        return slots, keep

    @staticmethod
    def _newer(slots: np.ndarray, ts: np.ndarray, last_ts: np.ndarray) -> np.ndarray:
        """Rows newer than ``last_ts`` of their slot and than their slot's previous row; advances
        ``last_ts``."""
        keep = ts > last_ts[slots]
        if len(slots) > 1:
            order = np.argsort(slots, kind="stable")
            s, t = slots[order], ts[order]
            later = np.ones(len(s), dtype=bool)
            later[1:] = (s[1:] != s[:-1]) | (t[1:] > t[:-1])
            in_stream = np.empty_like(later)
            in_stream[order] = later  # back to stream order: a scatter, not a second sort
            keep &= in_stream
        np.maximum.at(last_ts, slots[keep], ts[keep])
        return keep

    def append(self, slots: np.ndarray, x: np.ndarray, ts: np.ndarray) -> Sequences:
        """Append rows ``x`` (n, f) of admitted ``slots`` at event times ``ts`` in stream order; return
        each row's sequence (n, T, f): its asset's last ``T - 1`` kept vectors, then the row; and the
        key of that history."""
        n, t_len = len(slots), self.seq_len
        if n == 0:
            return Sequences.of(
                np.empty((0, t_len, self.n_features), dtype=np.float32), np.empty(0, np.int64)
            )
        self.newest[slots] = x  # the last row of each slot wins (fancy assignment goes in order)
        # Group rows by asset (stable: stream order within an asset).
        order = np.argsort(slots, kind="stable")
        sorted_slots = slots[order]
        unique = bool((sorted_slots[1:] != sorted_slots[:-1]).all())
        if unique:
            kept = self._kept(slots, ts)
            version = self.version[slots]
            prefix = np.where(self.count[slots] > 0, version, np.where(kept, version + 1, -1))
            self.version[slots] += kept
            return Sequences.of(self._append_unique(slots, x, kept), prefix)
        first = np.flatnonzero(np.r_[True, sorted_slots[1:] != sorted_slots[:-1]])
        uniq = sorted_slots[first]
        sizes = np.diff(np.r_[first, n])
        rank = np.arange(n) - np.repeat(first, sizes)  # of each row (by order) within its asset
        rounds = _rounds(order, rank)
        kept = self._kept(slots, ts, rounds)
        prefix = self._prefix(slots, kept, order, first, sizes)
        if sizes.max() <= _FEW_REPEATS:  # e.g. a poll spanning two rounds of the fleet: shift in rounds
            seq = np.empty((n, t_len, self.n_features), dtype=np.float32)
            for rows in rounds:
                seq[rows] = self._append_unique(slots[rows], x[rows], kept[rows])
            return Sequences.of(seq, prefix)
        # One segment per asset: its stored history (T rows) followed by its new rows.
        seg_start = np.r_[0, np.cumsum(t_len + sizes)[:-1]]
        combined = np.empty((len(uniq) * t_len + n, self.n_features), dtype=np.float32)
        hist_pos = (seg_start[:, None] + np.arange(t_len)).ravel()
        combined[hist_pos] = self.buf[uniq].reshape(-1, self.n_features)
        group = np.repeat(np.arange(len(uniq)), sizes)
        new_pos = seg_start[group] + t_len + rank
        combined[new_pos] = x[order]
        # The kept entries, in position order: each segment's valid history, then its kept new rows.
        valid = np.zeros(len(combined), dtype=bool)
        valid[hist_pos] = (np.arange(t_len)[None, :] >= (t_len - self.count[uniq])[:, None]).ravel()
        valid[new_pos[kept[order]]] = True
        kept_pos = np.flatnonzero(valid)
        # Each new row: the T - 1 kept entries before it, then itself; clamped to its asset's first.
        before = np.searchsorted(kept_pos, new_pos)  # kept entries before the row
        seg_first = np.searchsorted(kept_pos, seg_start)  # each segment's first kept entry
        rows = np.empty((3, n), dtype=np.int64)  # in stream order
        rows[:, order] = before, seg_first[group], new_pos
        # New state: each segment's last T kept entries.
        seg_end = np.searchsorted(kept_pos, seg_start + t_len + sizes)
        tail = np.maximum(seg_end[:, None] - t_len + np.arange(t_len), seg_first[:, None])
        self.buf[uniq] = combined[kept_pos[tail]]
        self.count[uniq] = np.minimum(seg_end - seg_first, t_len)
        return Sequences(t_len, combined, kept_pos, *rows, prefix)

    def _prefix(
        self, slots: np.ndarray, kept: np.ndarray, order: np.ndarray, first: np.ndarray, sizes: np.ndarray
    ) -> np.ndarray:
        """Each row's history key (rows grouped by asset: ``order``, group ``first`` and ``sizes``),
        before the rows change it; advances ``version``."""
        kept_sorted = kept[order].astype(np.int64)
        before = np.cumsum(kept_sorted) - kept_sorted  # kept rows earlier in the batch, all assets
        before -= np.repeat(before[first], sizes)  # ... of the row's own asset
        sorted_slots = slots[order]
        version = self.version[sorted_slots]
        opens = np.where(kept_sorted > 0, version + 1, -1)  # a row padding itself: see Sequences
        key = np.where((self.count[sorted_slots] > 0) | (before > 0), version + before, opens)
        prefix = np.empty(len(slots), dtype=np.int64)
        prefix[order] = key
        self.version[sorted_slots[first]] += np.add.reduceat(kept_sorted, first)  # kept rows per asset
        return prefix

    def _kept(self, slots: np.ndarray, ts: np.ndarray, rounds: list[np.ndarray] | None = None) -> np.ndarray:
        """Which rows join their asset's history (all of them without a step); advances ``kept_ts``.
        ``rounds``: the rows by their rank within their asset (:func:`_rounds`; None: no asset
        repeats, one round)."""
        if self.step <= 0:
            return np.ones(len(slots), dtype=bool)
        gap = self.step * (1.0 - STEP_TOLERANCE)
        kept_ts = self.kept_ts
        kept = np.zeros(len(slots), dtype=bool)
        # Round r takes every asset's r-th row: within a round no asset repeats, so a vectorised
        # step is exact, and a row sees what its asset's earlier rows kept.
        for rows in [np.arange(len(slots))] if rounds is None else rounds:
            s = slots[rows]
            k = ts[rows] - kept_ts[s] >= gap
            kept[rows[k]] = True
            kept_ts[s[k]] = ts[rows[k]]
        return kept

    def _append_unique(self, slots: np.ndarray, x: np.ndarray, kept: np.ndarray) -> np.ndarray:
        """:meth:`append` when no asset repeats in the batch (a live fleet): shift each row's window."""
        t_len = self.seq_len
        seq = np.empty((len(slots), t_len, self.n_features), dtype=np.float32)
        before = self.count[slots]
        first = np.flatnonzero(before == 0)  # no history yet: the row pads itself
        if len(first):  # a new asset's slot holds nothing to shift (and its memory is untouched)
            rest = np.flatnonzero(before > 0)
            seq[rest, :-1] = self.buf[slots[rest], 1:]
            seq[first, :-1] = x[first, None, :]
        else:
            seq[:, :-1] = self.buf[slots, 1:]
        seq[:, -1] = x
        count = np.minimum(before + 1, t_len)
        young = np.flatnonzero((count < t_len) & (before > 0))
        if len(young):  # left-pad with the first valid vector
            idx = np.maximum(np.arange(t_len), (t_len - count[young])[:, None])
            seq[young] = seq[young[:, None], idx]
        self.buf[slots[kept]] = seq[kept]
        self.count[slots[kept]] = count[kept]
        return seq

    def known(self, slots: np.ndarray, prefix: np.ndarray) -> np.ndarray:
        """Rows whose history's LSTM state is remembered (see :meth:`remember`)."""
        return (prefix >= 0) & (self.state_key[slots] == prefix)

    def state(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The remembered ``(h, c)`` of ``slots``."""
        return self.state_h[slots], self.state_c[slots]

    def remember(self, slots: np.ndarray, prefix: np.ndarray, h: np.ndarray, c: np.ndarray) -> None:
        """Remember the LSTM state ``(h, c)`` after each row's history (rows in stream order: an
        asset's last one stays). Rows with prefix -1 have no history to remember."""
        has = prefix >= 0
        slots = slots[has]
        self.state_key[slots], self.state_h[slots], self.state_c[slots] = prefix[has], h[has], c[has]

    def forget_states(self) -> None:
        """Drop every remembered state (another model's LSTM computed them)."""
        self.state_key[:] = -1

    def forget(self, slots: np.ndarray) -> None:
        """Empty the sequences of ``slots`` (their assets start over, left-padded)."""
        self.count[slots] = 0
        self.state_key[slots] = -1
        self.kept_ts[slots] = -np.inf
        self.last_ts[slots] = -np.inf
        self.last_marker_ts[slots] = -np.inf

    def latest(self, asset_ids: Sequence[str]) -> np.ndarray:
        """The newest vector of each asset, kept in its history or not (zeros for one never seen)."""
        return self.newest[self.slots(asset_ids)]

    def _grow(self, needed: int) -> None:
        room = room_for(needed, len(self.count))
        for name, start in _SLOT_START.items():
            setattr(self, name, grown(getattr(self, name), room, start))


def _rounds(order: np.ndarray, rank: np.ndarray) -> list[np.ndarray]:
    """The rows grouped by asset (``order``) regrouped by their ``rank`` within their asset: round r
    holds every asset's r-th row, so no asset repeats within a round."""
    by_rank = np.argsort(rank, kind="stable")
    return np.split(order[by_rank], np.flatnonzero(np.diff(rank[by_rank])) + 1)
