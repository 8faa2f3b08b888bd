"""The streaming engine: per-asset incremental state, updated by compiled loops over a batch.

State per asset (arrays indexed by an asset slot; the loops of :mod:`features.compiled` walk a
batch's readings in order, each updating its asset's slot):
for each window, a ring of its closed buckets (``buckets`` x signals x 5 numbers), the aggregates of
those buckets as seen from the current bucket (recomputed only when the current bucket changes),
and the current bucket's running aggregates. A reading costs O(signals) per window; a bucket change
costs O(buckets) once. Nothing grows with the window's length in readings: with the motor profile
that is ~32 KB per motor, ~37 KB with the readings waiting out a 60 s grace period at 1 reading/s
(``state_bytes``; ``motorwatch bench features`` measures it at 10,000 motors).

Event time (:mod:`features.eventtime`): late readings come back from :meth:`FeatureEngine.update`,
duplicates are dropped and counted, accepted readings wait (``grace``) until the asset's clock has
passed them, then are processed in event-time order, so out-of-order readings within the grace
period land where they belong. :meth:`FeatureEngine.flush` processes what still waits (end of a log).

>>> import numpy as np
>>> from ingest.profiles import load_profile
>>> from ingest.schemas import ReadingBatch
>>> from features.spec import FeatureSpec
>>> profile = load_profile("cmapss")
>>> engine = FeatureEngine(FeatureSpec.from_profile(profile))
>>> values = np.full((2, len(profile.signals)), 550.0)
>>> emitted, late = engine.update(ReadingBatch(profile.signal_names, ["1", "1"], np.array([1.0, 2.0]),
...                                            values, np.arange(2)))
>>> emitted.asset_id, emitted.ts.tolist(), len(late)
(['1', '1'], [1.0, 2.0], 0)
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from features import aggregators as ag
from features import compiled
from features.compiled import NO_BUCKET
from features.eventtime import emits, late_and_duplicates
from features.spec import FeatureSpec
from ingest.schemas import ReadingBatch


@dataclass(slots=True)
class Emitted:
    """Feature vectors in columns: ``values[i]`` belongs to ``asset_id[i]`` at event time ``ts[i]``."""

    asset_id: list[str]
    ts: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.asset_id)

    @classmethod
    def empty(cls, width: int) -> Emitted:
        return cls([], np.empty(0), np.empty((0, width)))

    @classmethod
    def concat(cls, parts: Sequence[Emitted], width: int) -> Emitted:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty(width)
        return cls(
            [a for p in parts for a in p.asset_id],
            np.concatenate([p.ts for p in parts]),
            np.concatenate([p.values for p in parts]),
        )


# The per-slot arrays of the running state beside the windows, in ``features.compiled``'s order.
_RUNNING = ("shift", "last_x", "last_t", "ew_num", "ew_den", "ew_t", "base_n", "base_s", "base_q")


class FeatureEngine:
    """Incremental features of many assets. Not thread-safe; one per worker."""

    def __init__(self, spec: FeatureSpec, capacity: int = 64) -> None:
        self.spec = spec
        self.columns = [spec.signals.index(s) for s in spec.used_signals]
        self.k = len(self.columns)
        self.asset_ids: list[str] = []
        self.slot: dict[str, int] = {}
        self.layout = 0  # bumped whenever existing assets get new slots (a drop renumbers them)
        self.duplicates = 0
        self.accepted = np.empty(0, dtype=np.int64)  # rows of the last batch taken (not late or duplicate)
        self._capacity = 0
        self._arrays: dict[str, np.ndarray] = {}
        self._waiting = 8  # capacity per asset for readings waiting out the grace period (grows)
        self._define_state()
        self._grow(capacity)
        self._maintenance: dict[int, list[float]] = {}

    # -- state layout ---------------------------------------------------------------------------

    def _define_state(self) -> None:
        k = self.k
        self._shapes: dict[str, tuple[tuple[int, ...], float, type]] = {
            "clock": ((), -np.inf, np.float64),  # newest accepted ts
            "prev_t": ((), np.nan, np.float64),  # ts of the last processed reading
            "first_t": ((), np.nan, np.float64),  # ts of the first processed reading
            "stale": ((), 0, np.bool_),
            "maintained_at": ((), np.nan, np.float64),
            "next_maintenance": ((), np.inf, np.float64),
            "shift": ((k,), np.nan, np.float64),
            "last_x": ((k,), np.nan, np.float64),
            "last_t": ((k,), np.nan, np.float64),
            "ew_num": ((k,), 0.0, np.float64),
            "ew_den": ((k,), 0.0, np.float64),
            "ew_t": ((k,), np.nan, np.float64),
            "base_n": ((k,), 0.0, np.float64),
            "base_s": ((k,), 0.0, np.float64),
            "base_q": ((k,), 0.0, np.float64),
            # Accepted readings waiting for the grace period: entries [head, head + n) of a row
            # sorted by ts; released entries before them are -inf, free ones after them +inf.
            "wait_head": ((), 0, np.int64),
            "wait_n": ((), 0, np.int64),
            "wait_ts": ((self._waiting,), np.inf, np.float64),
            "wait_x": ((self._waiting, k), np.nan, np.float64),
        }
        # What a maintenance event starts afresh (the shift, clocks and emission cadence go on).
        self._epoch_state = ["last_x", "last_t", "ew_num", "ew_den", "ew_t", "base_n", "base_s", "base_q"]
        for i, w in enumerate(self.spec.windows):
            r = w.buckets
            self._shapes[f"w{i}_k"] = ((), NO_BUCKET, np.int64)
            self._shapes[f"w{i}_ring_k"] = ((r,), NO_BUCKET, np.int64)
            self._shapes[f"w{i}_ring"] = ((r, k, ag.BUCKET), np.nan, np.float64)
            self._shapes[f"w{i}_cur"] = ((k, ag.BUCKET), np.nan, np.float64)
            self._shapes[f"w{i}_closed"] = ((k, ag.WINDOW), np.nan, np.float64)
            self._epoch_state += [f"w{i}_{part}" for part in ("k", "ring_k", "ring", "cur", "closed")]

    def _blank(self, name: str, rows: int) -> np.ndarray:
        shape, fill, dtype = self._shapes[name]
        out = np.full((rows, *shape), fill, dtype=dtype)
        if name.endswith("_cur") or name.endswith("_ring"):
            out[...] = ag.EMPTY_BUCKET
        elif name.endswith("_closed"):
            out[...] = ag.empty_window(())
        return out

    def _grow(self, need: int) -> None:
        if need <= self._capacity:
            return
        cap = max(need, 2 * self._capacity)
        for name in self._shapes:
            fresh = self._blank(name, cap)
            if name in self._arrays:
                fresh[: self._capacity] = self._arrays[name]
            self._arrays[name] = fresh
        self._capacity = cap

    def _grow_waiting(self, need: int) -> None:
        if need <= self._waiting:
            return
        old = self._waiting
        self._waiting = max(need, 2 * old)
        self._define_state()
        for name in ("wait_ts", "wait_x"):
            fresh = self._blank(name, self._capacity)
            fresh[:, :old] = self._arrays[name]
            self._arrays[name] = fresh

    def _shrink_waiting(self) -> None:
        """Give back waiting capacity a large batch needed (lists to the front, rows cut)."""
        st = self._arrays
        n = st["wait_n"][: self.assets]
        size = max(8, 2 * int(n.max(initial=0)))
        if self._waiting <= max(64, 4 * size):
            return
        cols = np.arange(size)[None, :] + st["wait_head"][: self.assets, None]
        cols = np.minimum(cols, self._waiting - 1)
        inside = np.arange(size)[None, :] < n[:, None]
        live = slice(0, self.assets)
        wait_ts = np.where(inside, np.take_along_axis(st["wait_ts"][live], cols, axis=1), np.inf)
        wait_x = np.take_along_axis(st["wait_x"][live], cols[:, :, None], axis=1)
        self._waiting = size
        self._define_state()
        for name, kept in (("wait_ts", wait_ts), ("wait_x", wait_x)):
            self._arrays[name] = self._blank(name, self._capacity)
            self._arrays[name][live] = kept
        st["wait_head"][live] = 0

    def _slots(self, asset_ids: Sequence[str]) -> np.ndarray:
        found = list(map(self.slot.get, asset_ids))
        if None in found:
            for i, aid in enumerate(asset_ids):
                if found[i] is None:
                    found[i] = self.slot.get(aid)
                    if found[i] is None:
                        found[i] = self.slot[aid] = len(self.asset_ids)
                        self.asset_ids.append(aid)
            self._grow(len(self.asset_ids))
        return np.array(found, dtype=np.int64)

    @property
    def assets(self) -> int:
        return len(self.asset_ids)

    @property
    def capacity(self) -> int:
        """Asset slots allocated (grows by doubling)."""
        return self._capacity

    def allocated_bytes(self) -> int:
        """Bytes of the state arrays as allocated, spare slots included."""
        return sum(a.nbytes for a in self._arrays.values())

    @property
    def waiting(self) -> int:
        """Accepted readings still waiting out the grace period."""
        return int(self._arrays["wait_n"][: self.assets].sum())

    def state_bytes(self) -> int:
        """Bytes of state held for the tracked assets (arrays plus waiting readings)."""
        per_asset = sum(a[0].nbytes for a in self._arrays.values()) if self._capacity else 0
        return per_asset * self.assets

    # -- input ----------------------------------------------------------------------------------

    def update(self, batch: ReadingBatch) -> tuple[Emitted, ReadingBatch]:
        """Take a batch of readings (delivery order). Returns the feature vectors now final and
        the late readings (for the dead-letter topic). Duplicates are dropped (``duplicates``)."""
        if not len(batch):
            self.accepted = np.empty(0, dtype=np.int64)
            return Emitted.empty(len(self.spec.names)), batch
        slots = self._slots(batch.asset_id)
        ts = batch.ts
        clock = self._arrays["clock"]
        late, dup = late_and_duplicates(slots, ts, self.spec.grace, clock0=clock)
        late |= ts < self._arrays["prev_t"][slots]  # after a flush, the processed past is closed
        dup &= ~late
        ok = np.flatnonzero(~(late | dup))
        # Duplicates of readings still waiting, or of the last one processed.
        sl, t = slots[ok], ts[ok]
        again = (self._arrays["wait_ts"][sl] == t[:, None]).any(axis=1) | (t == self._arrays["prev_t"][sl])
        self.duplicates += int(dup.sum() + again.sum())
        ok, sl, t = ok[~again], sl[~again], t[~again]
        self.accepted = ok
        np.maximum.at(clock, sl, t)
        self._arrays["stale"][sl] = False
        touched = self._wait(sl, t, batch.values[ok][:, self.columns])
        emitted = self._release(touched, clock[touched] - self.spec.grace)
        self._shrink_waiting()
        return emitted, batch.take(late)

    def flush(self) -> Emitted:
        """Process every reading still waiting for its grace period (the end of a log)."""
        touched = np.flatnonzero(self._arrays["wait_n"][: self.assets])
        return self._release(touched, np.full(len(touched), np.inf))

    def _wait(self, sl: np.ndarray, t: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Add accepted readings to their assets' waiting lists (kept sorted by ts); returns the
        assets touched."""
        st = self._arrays
        order = np.argsort(sl, kind="stable")
        sl, t, x = sl[order], t[order], x[order]
        touched, start, count = np.unique(sl, return_index=True, return_counts=True)
        rank = np.arange(len(sl)) - np.repeat(start, count)
        need = st["wait_n"][touched] + count
        longest = int(need.max(initial=0))
        if 2 * longest > self._waiting:
            # Room for twice the longest list: moves to the front stay rare, and the rows grow while
            # the lists fill (a fleet's first grace period), not when they first wrap, a grace
            # period later, when every asset's vectors are flowing and each growth is a stall.
            self._grow_waiting(2 * longest)
            st = self._arrays
        full = touched[st["wait_head"][touched] + need > self._waiting]
        if len(full):  # move those lists to the front of their rows (amortised: rare per asset)
            cols = np.minimum(
                np.arange(self._waiting)[None, :] + st["wait_head"][full][:, None], self._waiting - 1
            )
            inside = np.arange(self._waiting)[None, :] < st["wait_n"][full][:, None]
            st["wait_ts"][full] = np.where(
                inside, np.take_along_axis(st["wait_ts"][full], cols, axis=1), np.inf
            )
            st["wait_x"][full] = np.take_along_axis(st["wait_x"][full], cols[:, :, None], axis=1)
            st["wait_head"][full] = 0
        pos = st["wait_head"][sl] + st["wait_n"][sl] + rank
        st["wait_ts"][sl, pos] = t
        st["wait_x"][sl, pos] = x
        st["wait_n"][touched] += count
        waiting = st["wait_ts"][touched]
        unsorted = np.flatnonzero((waiting[:, 1:] < waiting[:, :-1]).any(axis=1))
        if len(unsorted):  # out-of-order arrivals: re-sort those assets' lists
            us = touched[unsorted]
            idx = np.argsort(waiting[unsorted], axis=1, kind="stable")
            st["wait_ts"][us] = np.take_along_axis(waiting[unsorted], idx, axis=1)
            st["wait_x"][us] = np.take_along_axis(st["wait_x"][us], idx[:, :, None], axis=1)
        return touched

    def add_maintenance(self, asset_ids: Sequence[str], ts: Iterable[float]) -> None:
        """Maintenance events: readings at or after ``ts`` start new windows, last values, EWMA and
        healthy baseline (nothing from before the repair describes the repaired asset)."""
        slots = self._slots(asset_ids)
        for s, t in zip(slots.tolist(), ts, strict=True):
            events = self._maintenance.setdefault(s, [])
            events.append(float(t))
            events.sort()
            self._arrays["next_maintenance"][s] = events[0]

    def slots_of(self, asset_ids: Sequence[str]) -> np.ndarray:
        """The assets' slots, -1 for an asset never seen; valid while :attr:`layout` is unchanged."""
        return np.array([self.slot.get(a, -1) for a in asset_ids], dtype=np.int64)

    def silence_state(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the clocks (newest accepted ``ts``) and stale flags of the assets in ``slots``
        (see :meth:`slots_of`). An asset never seen counts as stale already: nothing can go silent
        before its first reading."""
        known = slots >= 0
        clock = np.full(len(slots), -np.inf)
        stale = ~known
        clock[known] = self._arrays["clock"][slots[known]]
        stale[known] = self._arrays["stale"][slots[known]]
        return clock, stale

    def mark_stale(self, asset_ids: Iterable[str]) -> None:
        """Flag assets stale (a marker went out for their silence; their next reading clears it)."""
        slots = [self.slot[a] for a in asset_ids]
        self._arrays["stale"][slots] = True

    # -- processing -----------------------------------------------------------------------------

    def _release(self, touched: np.ndarray, upto: np.ndarray) -> Emitted:
        """Process the waiting readings of assets ``touched`` with ts <= ``upto`` (per asset)."""
        st = self._arrays
        waiting = st["wait_ts"][touched]
        head = st["wait_head"][touched]
        n = np.minimum((waiting <= upto[:, None]).sum(axis=1) - head, st["wait_n"][touched])
        go = np.flatnonzero(n)
        if not len(go):
            return Emitted.empty(len(self.spec.names))
        us, n, head = touched[go], n[go], head[go]
        slots = np.repeat(us, n)
        col = np.arange(len(slots)) - np.repeat(np.cumsum(n) - n, n)
        pos = col + np.repeat(head, n)
        ts, x = st["wait_ts"][slots, pos], st["wait_x"][slots, pos]
        st["wait_ts"][slots, pos] = -np.inf
        st["wait_head"][us] += n
        st["wait_n"][us] -= n
        # Round r holds the r-th reading of every asset: the vectors go out round by round.
        order = np.argsort(col, kind="stable")
        slots, ts, x = slots[order], ts[order], x[order]
        parts = []
        start = 0
        while start < len(slots):  # up to the next reading that comes after a maintenance event
            due = np.flatnonzero(ts[start:] >= st["next_maintenance"][slots[start:]])
            end = start + int(due[0]) if len(due) else len(slots)
            if end > start:
                parts.append(self._steps(slots[start:end], ts[start:end], x[start:end]))
            if end < len(slots):
                self._apply_maintenance(slots[end : end + 1], ts[end : end + 1])
            start = end
        # Features of every part at once: the per-call cost of the statistics is paid once.
        inputs = ag.Inputs(
            windows={
                w.name: np.concatenate([p[1].windows[w.name] for p in parts]) for w in self.spec.windows
            },
            **{
                f: np.concatenate([getattr(p[1], f) for p in parts])
                for f in ("shift", "last", "ewma", "base_mean", "base_std", "ts", "maintained_at")
            },
        )
        ids = self.asset_ids
        asset_ids = [ids[s] for p in parts for s in p[0].tolist()]
        return Emitted(asset_ids, inputs.ts.copy(), ag.compute(self.spec, inputs))

    def _steps(self, sl: np.ndarray, t: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, ag.Inputs]:
        """Process the readings ``(sl, t, x)`` (each asset's in event-time order, no maintenance due
        among them) in compiled loops over the per-slot state; returns the slots of the emitting
        ones and what their features need."""
        st, spec = self._arrays, self.spec
        # Each reading's predecessor of its asset: within these readings, else the last processed.
        by_slot = np.argsort(sl, kind="stable")
        s = sl[by_slot]
        head = np.r_[True, s[1:] != s[:-1]]
        prev = np.empty(len(t))
        prev[by_slot] = np.where(head, st["prev_t"][s], np.r_[np.nan, t[by_slot][:-1]])
        first = np.isnan(prev)
        st["first_t"][sl[first]] = t[first]
        tail = by_slot[np.r_[head[1:], True]]
        st["prev_t"][sl[tail]] = t[tail]
        emit = emits(first, t, prev, spec.emit_every)
        running = tuple(st[name] for name in _RUNNING)
        xs, kept = compiled.stream_reading_state(sl, t, x, emit, running, spec.ewma_halflife, spec.baseline_n)
        windows = {}
        for i, w in enumerate(spec.windows):
            state = (st[f"w{i}_{part}"] for part in ("k", "ring_k", "ring", "cur", "closed"))
            windows[w.name] = compiled.stream_window_step(sl, t, xs, emit, w.width, w.buckets, *state)
        e = np.flatnonzero(emit)
        es, te = sl[e], t[e]
        maintained = st["maintained_at"][es]
        inputs = ag.Inputs(
            windows=windows,
            shift=kept[compiled.SHIFT],
            last=ag.last_in_window(spec.windows[0], te, kept[compiled.LAST_X], kept[compiled.LAST_T]),
            ewma=kept[compiled.EWMA],
            base_mean=kept[compiled.BASE_MEAN],
            base_std=kept[compiled.BASE_STD],
            ts=te,
            maintained_at=np.where(np.isnan(maintained), st["first_t"][es], maintained),
        )
        return es, inputs

    def _apply_maintenance(self, slots: np.ndarray, ts: np.ndarray) -> None:
        """The assets ``slots`` were maintained before their reading at ``ts``: their windows, last
        values, EWMA and healthy baseline start afresh (the repaired asset is another machine)."""
        st = self._arrays
        for s, t in zip(slots.tolist(), ts.tolist(), strict=True):
            events = self._maintenance[s]
            while events and events[0] <= t:
                st["maintained_at"][s] = events.pop(0)
            st["next_maintenance"][s] = events[0] if events else np.inf
            if not events:
                del self._maintenance[s]
        for name in self._epoch_state:
            st[name][slots] = self._blank(name, len(slots))

    # -- recovery -------------------------------------------------------------------------------

    def snapshot(self, asset_ids: Iterable[str] | None = None) -> bytes:
        """The state of ``asset_ids`` (default: all) as bytes, for :meth:`restore`."""
        ids = list(self.asset_ids) if asset_ids is None else [a for a in asset_ids if a in self.slot]
        slots = np.array([self.slot[a] for a in ids], dtype=np.int64)
        local = {s: i for i, s in enumerate(slots.tolist())}
        events = [(local[s], t) for s, ev in self._maintenance.items() if s in local for t in ev]
        arrays = {name: arr[slots] for name, arr in self._arrays.items()}
        arrays.update(
            _ids=np.array(ids, dtype=np.str_),
            _maint_slot=np.array([e[0] for e in events], dtype=np.int64),
            _maint_ts=np.array([e[1] for e in events], dtype=np.float64),
            _fingerprint=np.array(self.spec.fingerprint()),
        )
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    def restore(self, blob: bytes) -> list[str]:
        """Load a :meth:`snapshot` (replacing the state of the assets it holds); returns their ids."""
        with np.load(io.BytesIO(blob), allow_pickle=False) as data:
            if str(data["_fingerprint"]) != self.spec.fingerprint():
                raise ValueError("snapshot was taken with another feature spec")
            ids = [str(a) for a in data["_ids"]]
            self.drop(ids)
            slots = self._slots(ids)
            self._grow_waiting(data["wait_ts"].shape[1])
            for name, arr in self._arrays.items():
                saved = data[name]
                if name.startswith("wait_") and saved.ndim > 1:
                    arr[slots, : saved.shape[1]] = saved
                else:
                    arr[slots] = saved
            for s, t in zip(slots[data["_maint_slot"]].tolist(), data["_maint_ts"].tolist(), strict=True):
                self._maintenance.setdefault(s, []).append(t)
        return ids

    def drop(self, asset_ids: Iterable[str]) -> None:
        """Forget assets (their partition moved to another worker); the others keep dense slots."""
        dropped = {self.slot[a] for a in asset_ids if a in self.slot}
        if not dropped:
            return
        survivors = [a for a in self.asset_ids if self.slot[a] not in dropped]
        old = np.array([self.slot[a] for a in survivors], dtype=np.int64)
        for name, arr in self._arrays.items():
            arr[: len(old)] = arr[old]
            arr[len(old) :] = self._blank(name, self._capacity - len(old))
        remap = dict(zip(old.tolist(), range(len(old)), strict=True))
        self._maintenance = {remap[s]: ev for s, ev in self._maintenance.items() if s in remap}
        self.asset_ids = survivors
        self.slot = {a: i for i, a in enumerate(survivors)}
        self.layout += 1
