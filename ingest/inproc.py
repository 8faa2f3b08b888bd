"""The in-process bus: Kafka's model (partitioned logs, consumer groups, committed offsets) in memory.

A topic has N partitions; each is an append-only log addressed by offset. A key goes to partition
``murmur2(key) % N`` (:func:`ingest.bus.partition_for`), as on Kafka, so per-asset order and placement
match. Consumers of one group split the partitions (Kafka's range assignor) and rebalance when a
member joins or closes; callbacks fire inside the member's own ``poll_batch``, as on Kafka. After a
rebalance a member resumes each partition it owns from the group's committed offset, so records
returned but not committed are delivered again (at-least-once).

Memory and back-pressure. A partition keeps only what some group that reads the topic has not yet
committed (a topic nobody reads keeps its last ``max_backlog`` messages, as Kafka's retention would).
``send_batch`` waits while a target partition holds ``max_backlog`` or more messages not yet committed
by some group, and raises :class:`BusError` naming the topic after ``block_timeout_s``; it raises at
once when every consumer of that group runs on the calling thread (waiting could only deadlock). The
check happens before a batch is appended, so a single-threaded runner never blocks as long as its
consumers drain what each round produced: produce a batch, then ``run_once`` the downstream stages
until they return 0 (or produce batches no larger than a stage consumes per round).

>>> bus = InProcessBus(partitions=2)
>>> bus.producer().send_batch("t", [(b"m1", b"a"), (b"m1", b"b")])
>>> c = bus.consumer(["t"], "g")
>>> [r.value for r in c.poll_batch()]
[b'a', b'b']
>>> c.commit()
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import repeat

from ingest.bus import BusError, RebalanceCallback, Record, TopicPartition, partition_for

DEFAULT_PARTITIONS = 6
DEFAULT_MAX_BACKLOG = 50_000
DEFAULT_BLOCK_TIMEOUT_S = 30.0
_PLACEMENT_CACHE_MAX = 100_000  # keys remembered per topic (murmur2 in Python costs ~5 µs a key)


class _Partition:
    """An append-only log in columns: offset ``base + i`` is ``keys[i]``, ``values[i]``, ``stamps[i]``."""

    __slots__ = ("base", "keys", "stamps", "values")

    def __init__(self) -> None:
        self.base = 0
        self.keys: list[bytes | None] = []
        self.values: list[bytes] = []
        self.stamps: list[int] = []

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def end(self) -> int:
        return self.base + len(self.keys)

    def trim(self, below: int) -> None:
        """Forget offsets below ``below`` (moving what stays: at most ``max_backlog`` pointers)."""
        drop = below - self.base
        if drop > 0:
            del self.keys[:drop], self.values[:drop], self.stamps[:drop]
            self.base = below


@dataclass(eq=False)
class _Topic:
    name: str
    partitions: list[_Partition]
    placement: dict[bytes, int] = field(default_factory=dict)
    groups: list[_Group] = field(default_factory=list)  # groups that ever subscribed (they pin the log)
    round_robin: itertools.count = field(default_factory=itertools.count)  # for messages without a key

    def place(self, key: bytes | None) -> int:
        if key is None:
            return next(self.round_robin) % len(self.partitions)
        p = self.placement.get(key)
        if p is None:
            if len(self.placement) >= _PLACEMENT_CACHE_MAX:
                self.placement.clear()
            p = self.placement[key] = partition_for(key, len(self.partitions))
        return p


@dataclass(eq=False)
class _Group:
    name: str
    members: list[InProcessConsumer] = field(default_factory=list)
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    owner: dict[TopicPartition, InProcessConsumer] = field(default_factory=dict)

    def backlog(self, tp: TopicPartition, part: _Partition) -> int:
        return part.end - self.committed.get(tp, part.base)


class InProcessBus:
    """An embedded, thread-safe bus with Kafka's semantics (see the module docstring).

    ``partitions``: for topics created implicitly by a producer or consumer. ``max_backlog``: messages
    per partition a group may leave uncommitted before producers wait. ``block_timeout_s``: how long.
    """

    kind = "inproc"

    def __init__(
        self,
        partitions: int = DEFAULT_PARTITIONS,
        *,
        max_backlog: int = DEFAULT_MAX_BACKLOG,
        block_timeout_s: float = DEFAULT_BLOCK_TIMEOUT_S,
    ) -> None:
        if partitions < 1 or max_backlog < 1:
            raise ValueError("partitions and max_backlog must be >= 1")
        self.default_partitions = partitions
        self.max_backlog = max_backlog
        self.block_timeout_s = block_timeout_s
        self._cond = threading.Condition()
        self._topics: dict[str, _Topic] = {}
        self._groups: dict[str, _Group] = {}
        self._member_ids = itertools.count()
        self._closed = False

    # -- admin -------------------------------------------------------------------------------------
    def create_topics(self, topics: Sequence[str], partitions: int) -> None:
        """Create topics that do not exist yet, each with ``partitions`` partitions."""
        if partitions < 1:
            raise ValueError("partitions must be >= 1")
        with self._cond:
            for name in topics:
                self._topic(name, partitions)

    def partitions(self, topic: str) -> int:
        """Partition count of ``topic`` (creating it with the default count if new)."""
        with self._cond:
            return len(self._topic(topic).partitions)

    def end_offsets(self, topic: str) -> list[int]:
        """The next offset of each partition of ``topic``."""
        with self._cond:
            return [p.end for p in self._topic(topic).partitions]

    def retained(self, topic: str) -> int:
        """Messages of ``topic`` held in memory now (what trimming and back-pressure bound)."""
        with self._cond:
            return sum(len(p) for p in self._topic(topic).partitions)

    def _topic(self, name: str, partitions: int | None = None) -> _Topic:
        self._check_open()
        t = self._topics.get(name)
        if t is None:
            n = partitions or self.default_partitions
            t = self._topics[name] = _Topic(name, [_Partition() for _ in range(n)])
        return t

    def _check_open(self) -> None:
        if self._closed:
            raise BusError("the in-process bus is closed")

    # -- clients -----------------------------------------------------------------------------------
    def producer(self) -> InProcessProducer:
        self._check_open()
        return InProcessProducer(self)

    def consumer(
        self,
        topics: Sequence[str],
        group_id: str,
        *,
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
    ) -> InProcessConsumer:
        """Join ``group_id`` (a rebalance); partitions are split among its members."""
        with self._cond:
            subscribed = [self._topic(name) for name in topics]
            group = self._groups.setdefault(group_id, _Group(group_id))
            member = InProcessConsumer(self, group, subscribed, next(self._member_ids), on_assign, on_revoke)
            for t in subscribed:
                if group not in t.groups:
                    t.groups.append(group)
            group.members.append(member)
            self._rebalance(group)
            return member

    def close(self) -> None:
        """Drop every log and group; later calls raise :class:`BusError`."""
        with self._cond:
            self._closed = True
            self._topics.clear()
            self._groups.clear()
            self._cond.notify_all()

    # -- internals (called with the lock held unless said otherwise) -------------------------------
    def _rebalance(self, group: _Group) -> None:
        """Range-assign each topic's partitions to the group's members that subscribe to it."""
        new: dict[InProcessConsumer, set[TopicPartition]] = {m: set() for m in group.members}
        group.owner.clear()
        topics = {t.name: t for m in group.members for t in m.topics}
        for name, t in topics.items():
            readers = [m for m in group.members if t in m.topics]
            share, extra = divmod(len(t.partitions), len(readers))
            start = 0
            for i, m in enumerate(readers):
                stop = start + share + (i < extra)
                for p in range(start, stop):
                    new[m].add((name, p))
                    group.owner[(name, p)] = m
                start = stop
        for m, tps in new.items():
            m.pending = frozenset(tps)
        self._cond.notify_all()

    def _append(self, topic: str, messages: Iterable[tuple[bytes | None, bytes]]) -> None:
        """Place messages by key, wait out back-pressure, append; outside the lock for placing."""
        with self._cond:
            t = self._topic(topic)
        keys: list[list[bytes | None]] = [[] for _ in t.partitions]
        values: list[list[bytes]] = [[] for _ in t.partitions]
        cached = t.placement.get
        for key, value in messages:
            p = cached(key)
            if p is None:
                p = t.place(key)
            keys[p].append(key)
            values[p].append(value)
        stamp = int(time.time() * 1000)
        targets = [p for p, k in enumerate(keys) if k]
        deadline = time.monotonic() + self.block_timeout_s
        with self._cond:
            self._wait_for_room(t, targets, deadline)  # then append the whole batch at once
            for p in targets:
                part = t.partitions[p]
                part.keys.extend(keys[p])
                part.values.extend(values[p])
                part.stamps.extend([stamp] * len(keys[p]))
                if not t.groups:  # nobody reads it: keep a bounded tail, as Kafka's retention would
                    part.trim(part.end - self.max_backlog)
            self._cond.notify_all()

    def _wait_for_room(self, t: _Topic, targets: list[int], deadline: float) -> None:
        while True:
            self._check_open()
            full = next(
                (
                    (g, p)
                    for p in targets
                    for g in t.groups
                    if g.backlog((t.name, p), t.partitions[p]) >= self.max_backlog
                ),
                None,
            )
            if full is None:
                return
            full, p = full
            tp, part = (t.name, p), t.partitions[p]
            me = threading.get_ident()
            alone = bool(full.members) and all(m.thread == me for m in full.members)
            remaining = deadline - time.monotonic()
            if alone or remaining <= 0:
                why = (
                    "its consumers run on this thread, so waiting would deadlock: drain them between produces"
                    if alone
                    else f"no commit within {self.block_timeout_s:g} s"
                )
                raise BusError(
                    f"topic {t.name!r} partition {p}: consumer group {full.name!r} has "
                    f"{full.backlog(tp, part)} uncommitted messages (max_backlog {self.max_backlog}); {why}"
                )
            self._cond.wait(remaining)

    def _trim(self, t: _Topic, p: int) -> None:
        part = t.partitions[p]
        tp = (t.name, p)
        part.trim(min(g.committed.get(tp, part.base) for g in t.groups))


class InProcessProducer:
    """Appends batches to the bus's logs. Every send is on the log when ``send_batch`` returns."""

    def __init__(self, bus: InProcessBus) -> None:
        self._bus = bus

    def send_batch(self, topic: str, messages: Iterable[tuple[bytes, bytes]]) -> None:
        """Append ``(key, value)`` messages; may wait when a consumer group lags (back-pressure)."""
        self._bus._append(topic, messages)

    def flush(self, timeout_s: float | None = None) -> None:
        """Nothing is buffered: raise only if the bus is closed."""
        with self._bus._cond:
            self._bus._check_open()

    def close(self) -> None:
        """Nothing to release."""


class InProcessConsumer:
    """A member of a consumer group. Use from one thread (like a Kafka consumer)."""

    def __init__(
        self,
        bus: InProcessBus,
        group: _Group,
        topics: list[_Topic],
        member_id: int,
        on_assign: RebalanceCallback | None,
        on_revoke: RebalanceCallback | None,
    ) -> None:
        self._bus = bus
        self._group = group
        self.topics = topics
        self._by_name = {t.name: t for t in topics}
        self.member_id = member_id
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self.pending: frozenset[TopicPartition] | None = None  # set by a rebalance, applied in poll
        self.thread: int | None = None  # the thread that polls this consumer
        self._assigned: list[TopicPartition] = []
        self._positions: dict[TopicPartition, int] = {}  # next offset to return
        self._returned: dict[TopicPartition, int] = {}  # next offset after the last record returned
        self._cursor = 0  # round-robin start over assigned partitions, for fairness
        self._closed = False

    def assignment(self) -> set[TopicPartition]:
        """The partitions this consumer owns since its last poll (a rebalance lands in a poll)."""
        return set(self._assigned)

    def poll_batch(self, max_records: int = 1000, timeout_s: float = 0.1) -> list[Record]:
        """Up to ``max_records`` records, waiting up to ``timeout_s`` for the first ones."""
        bus = self._bus
        self.thread = threading.get_ident()
        deadline = time.monotonic() + timeout_s
        chunks = None
        while not chunks:
            self._apply_rebalance()  # outside the lock: callbacks may produce or commit
            with bus._cond:
                self._check_open()
                if self.pending is not None:
                    continue
                chunks = self._fetch(max_records)
                if not chunks:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return []
                    bus._cond.wait(remaining)
        # Records are built outside the lock (in C, by map), from slices taken under it.
        out: list[Record] = []
        for topic, p, start, keys, values, stamps in chunks:
            offsets = range(start, start + len(keys))
            out.extend(map(Record, repeat(topic), repeat(p), offsets, keys, values, stamps))
        return out

    def _fetch(self, max_records: int) -> list[tuple[str, int, int, list, list, list]]:
        chunks = []
        n = len(self._assigned)
        left = max_records
        for i in range(n):
            tp = self._assigned[(self._cursor + i) % n]
            part = self._by_name[tp[0]].partitions[tp[1]]
            pos = self._positions[tp]
            lo = pos - part.base
            hi = min(lo + left, len(part))
            if hi > lo:
                chunks.append((*tp, pos, part.keys[lo:hi], part.values[lo:hi], part.stamps[lo:hi]))
                self._positions[tp] = self._returned[tp] = pos + hi - lo
                left -= hi - lo
                if not left:
                    break
        self._cursor = (self._cursor + 1) % n if n else 0
        return chunks

    def _apply_rebalance(self) -> None:
        """Take a pending assignment: revoke the old one, resume from committed offsets, assign."""
        if self.pending is None:
            return
        bus = self._bus
        old = set(self._assigned)
        if old and self._on_revoke is not None:
            self._on_revoke(old)
        with bus._cond:
            self._check_open()
            new, self.pending = self.pending, None
            self._assigned = sorted(new)
            self._positions = {
                tp: max(self._group.committed.get(tp, 0), self._by_name[tp[0]].partitions[tp[1]].base)
                for tp in new
            }
            self._returned = {}
        if self._on_assign is not None:
            self._on_assign(set(new))

    def commit(self) -> None:
        """Commit every record returned so far from partitions this consumer still owns."""
        bus = self._bus
        with bus._cond:
            self._check_open()
            group = self._group
            for tp, offset in self._returned.items():
                if group.owner.get(tp) is self:
                    group.committed[tp] = offset
                    bus._trim(self._by_name[tp[0]], tp[1])
            self._returned = {}
            bus._cond.notify_all()

    def close(self) -> None:
        """Leave the group (the others rebalance). Uncommitted records go to the next owner."""
        bus = self._bus
        with bus._cond:
            if self._closed:
                return
            self._closed = True
            if bus._closed:
                return
            self._group.members.remove(self)
            for tp in [tp for tp, m in self._group.owner.items() if m is self]:
                del self._group.owner[tp]
            bus._rebalance(self._group)

    def _check_open(self) -> None:
        if self._closed:
            raise BusError(f"consumer of group {self._group.name!r} is closed")
        self._bus._check_open()
