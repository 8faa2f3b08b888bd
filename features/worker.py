"""The feature worker: ``sensor.readings`` (+ ``maintenance.events``) -> ``sensor.features``.

One :meth:`FeatureWorker.run_once` is one polled batch: decode it in one call (bad readings go to
``sensor.readings.dlq`` with their reason), run the streaming engine (late readings go there too,
reason ``late``), advance each partition's watermark (assets silent for longer than the profile's
``stale_after`` get a ``stale`` marker, the same whatever the batching), produce the feature vectors
and flush. Every
``checkpoint_interval_s`` it checkpoints: snapshot the state of each owned partition (with the
offsets it covers) to ``state_dir``, THEN commit the offsets. ARCHITECTURE.md ("Feature worker")
lists the failures this order survives.

A feature that is undefined (NaN: its window holds no value of its signal) is left out of the
message's ``features``.
"""

from __future__ import annotations

import io
import logging
import math
import os
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from features import compiled, metrics
from features.spec import FeatureSpec
from features.stream import Emitted, FeatureEngine
from ingest import topics
from ingest.bus import Bus, Producer, Record, TopicPartition
from ingest.deadletter import dead_letter
from ingest.profiles import Profile
from ingest.schemas import (
    FeatureBlock,
    MaintenanceEvent,
    ReadingBatch,
    ReadingRow,
    Reason,
    Rejection,
    decode_many,
    decode_reading_rows,
    decode_readings,
    raw,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Known:
    """A partition's assets in id order, with each one's position and engine slot (-1: none yet),
    kept between batches: rebuilt only when assets join or the engine renumbers its slots, so a
    batch costs O(its readings), not O(the partition's assets), in Python."""

    ids: list[str]
    index: dict[str, int]
    slots: np.ndarray
    layout: int  # the engine's slot layout that ``slots`` come from

    @classmethod
    def of(cls, assets: set[str], engine: FeatureEngine) -> _Known:
        ids = sorted(assets)
        return cls(ids, {a: i for i, a in enumerate(ids)}, engine.slots_of(ids), engine.layout)

    def current(self, engine: FeatureEngine) -> bool:
        return self.layout == engine.layout and bool((self.slots >= 0).all())


# A partition's assets, with their clocks and stale flags before a batch.
_Silence = tuple[_Known, np.ndarray, np.ndarray]


@dataclass(frozen=True, slots=True)
class _Marker:
    """A stale marker: its asset, event time, the asset's clock before the batch, and the row of the
    batch after which it goes out."""

    asset_id: str
    ts: float
    clock: float
    row: int


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """``state_dir``: where partition snapshots live (None: state only in memory, offsets committed
    after every batch, and a restart rebuilds windows from new readings only)."""

    group_id: str = "motorwatch-features"
    state_dir: Path | None = None
    readings_topic: str = topics.READINGS
    maintenance_topic: str = topics.MAINTENANCE
    features_topic: str = topics.FEATURES
    checkpoint_interval_s: float = 10.0
    max_records: int = 4096
    timeout_s: float = 0.05
    # Send FeatureBlock rows rather than JSON: only for a scorer in this process, on the in-process bus.
    columns_in_process: bool = False

    @classmethod
    def prefixed(cls, prefix: str, **fields: object) -> WorkerConfig:
        """A worker whose three topics are named with ``prefix`` (an isolated pipeline on one cluster)."""
        return cls(
            readings_topic=prefix + topics.READINGS,
            maintenance_topic=prefix + topics.MAINTENANCE,
            features_topic=prefix + topics.FEATURES,
            **fields,
        )


class FeatureWorker:
    """Consumes readings and maintenance events, produces feature vectors and stale markers."""

    def __init__(
        self, bus: Bus, profile: Profile, config: WorkerConfig | None = None, producer: Producer | None = None
    ) -> None:
        """``producer``: where the outputs go (default: ``bus``); a round ends with its ``flush``."""
        self.config = config or WorkerConfig()
        self.profile = profile
        self.spec = FeatureSpec.from_profile(profile)
        self.engine = FeatureEngine(self.spec)
        self.names = tuple(self.spec.names)
        self._owned: set[int] = set()
        self._assets: dict[int, set[str]] = defaultdict(set)
        self._known: dict[int, _Known] = {}
        self._watermark: dict[int, float] = {}
        self._next: dict[TopicPartition, int] = {}  # offsets already applied to the state
        self._uncommitted = False
        self._unflushed = False  # a batch failed between taking its records and flushing its outputs
        self._last_checkpoint = time.monotonic()
        if self.config.state_dir is not None:
            self.config.state_dir.mkdir(parents=True, exist_ok=True)
        self.producer = producer or bus.producer()
        self.consumer = bus.consumer(
            [self.config.readings_topic, self.config.maintenance_topic],
            self.config.group_id,
            on_assign=self._on_assign,
        )

    # -- the loop -------------------------------------------------------------------------------

    def run_once(self, max_records: int | None = None, timeout_s: float | None = None) -> int:
        """Poll one batch, process it, produce and flush; checkpoint when due. Returns records consumed.

        If a batch fails before its outputs are flushed (e.g. the broker refuses them), the state and
        the consumer's position are past readings whose outputs may be lost: the worker then refuses
        to go on or to checkpoint, and a restart resumes from the last checkpoint."""
        if self._unflushed:
            raise RuntimeError("a batch failed before its outputs were flushed: restart the worker")
        records = self.consumer.poll_batch(
            max_records or self.config.max_records,
            self.config.timeout_s if timeout_s is None else timeout_s,
        )
        if not records:
            if self._uncommitted and self._checkpoint_due():
                self.checkpoint()
            return 0
        started = time.perf_counter()
        self._unflushed = True
        fresh = []
        for r in records:  # redelivered records already in the state are skipped
            tp = (r.topic, r.partition)
            if r.offset >= self._next.get(tp, 0):
                fresh.append(r)
                self._next[tp] = r.offset + 1
        maintenance = [r for r in fresh if r.topic == self.config.maintenance_topic]
        readings = [r for r in fresh if r.topic == self.config.readings_topic]
        if maintenance:
            self._maintenance(maintenance)
        out = self._readings(readings) if readings else []
        if out:
            self.producer.send_batch(self.config.features_topic, out)
        self.producer.flush()
        self._unflushed = False
        self._uncommitted = True
        if self._checkpoint_due():
            self.checkpoint()
        metrics.ASSETS.set(self.engine.assets)
        metrics.WAITING.set(self.engine.waiting)
        metrics.STATE_BYTES.set(self.engine.state_bytes())
        metrics.LATENCY.observe(time.perf_counter() - started)
        return len(records)

    def finish(self) -> int:
        """The end of the input (a replayed log): emit the readings still waiting out their grace
        period, produce and flush. Returns the feature vectors emitted."""
        emitted = self.engine.flush()
        if len(emitted):
            self.producer.send_batch(self.config.features_topic, self._encode(emitted))
            metrics.EMITTED.labels("vector").inc(len(emitted))
        self.producer.flush()
        return len(emitted)

    def run(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set, then checkpoint and close."""
        try:
            while not stop.is_set():
                self.run_once()
        finally:
            self.close()

    def close(self) -> None:
        """Checkpoint (unless a batch failed unflushed: its records must be read again) and close."""
        if self._uncommitted and not self._unflushed:
            self.checkpoint()
        self.consumer.close()
        self.producer.close()

    def _checkpoint_due(self) -> bool:
        if self.config.state_dir is None:
            return True
        return time.monotonic() - self._last_checkpoint >= self.config.checkpoint_interval_s

    def checkpoint(self) -> None:
        """Snapshot the state of every owned partition (outputs are already flushed), THEN commit."""
        if self.config.state_dir is not None:
            for p in sorted(self._owned):
                self._write_snapshot(p)
            metrics.CHECKPOINTS.inc()
        self.consumer.commit()
        self._uncommitted = False
        self._last_checkpoint = time.monotonic()

    # -- processing -----------------------------------------------------------------------------

    def _maintenance(self, records: list[Record]) -> None:
        pairs, rejects = decode_many([r.value for r in records], MaintenanceEvent)
        dead_letter(self.producer, records, rejects, stage="features")
        if pairs:
            self.engine.add_maintenance([m.asset_id for _, m in pairs], [m.ts for _, m in pairs])

    def _decode(self, records: list[Record]) -> tuple[ReadingBatch, list[Rejection]]:
        """The readings as columns: handed over by a replay in this process (``ReadingRow``), or JSON."""
        values = [r.value for r in records]
        refs = [v for v in values if type(v) is ReadingRow]
        if refs:
            decoded = decode_reading_rows(refs, self.profile) if len(refs) == len(values) else None
            if decoded is not None:
                return decoded
            values = list(map(raw, values))
        return decode_readings(values, self.profile)

    def _readings(self, records: list[Record]) -> list[tuple[bytes, Any]]:
        batch, rejects = self._decode(records)
        duplicates = self.engine.duplicates
        part = np.array([records[i].partition for i in batch.index.tolist()], dtype=np.int64)
        silent_before = self._silence_state(part, batch.asset_id)
        emitted, late = self.engine.update(batch)
        grace = self.spec.grace
        late_rejects = [
            Rejection(
                int(i), Reason.LATE, f"ts {ts!r} is more than {grace} older than the asset's newest reading"
            )
            for i, ts in zip(late.index.tolist(), late.ts.tolist(), strict=True)
        ]
        letters = sorted(rejects + late_rejects, key=lambda r: r.index)
        dead_letter(self.producer, records, letters, stage="features")
        duplicates = self.engine.duplicates - duplicates
        metrics.READINGS.labels("invalid").inc(len(rejects))
        metrics.READINGS.labels("late").inc(len(late))
        metrics.READINGS.labels("duplicate").inc(duplicates)
        metrics.READINGS.labels("processed").inc(len(batch) - len(late) - duplicates)
        markers = self._stale_markers(part, batch, silent_before)
        metrics.EMITTED.labels("vector").inc(len(emitted))
        metrics.EMITTED.labels("stale").inc(len(markers))
        out = self._encode(emitted)
        return self._place(markers, out, emitted, batch) if markers else out

    def _silence_state(self, part: np.ndarray, asset_ids: list[str]) -> dict[int, _Silence]:
        """Per partition of the batch: its assets (tracked before, or new in it), with their clocks
        and stale flags before the batch."""
        out = {}
        for p in np.unique(part).tolist():
            assets = self._assets.setdefault(p, set())
            new = {asset_ids[i] for i in np.flatnonzero(part == p).tolist()} - assets
            known = self._known.get(p)
            if new or known is None or not known.current(self.engine):
                assets |= new
                known = self._known[p] = _Known.of(assets, self.engine)
            out[p] = (known, *self.engine.silence_state(known.slots))
        return out

    def _stale_markers(
        self, part: np.ndarray, batch: ReadingBatch, before: dict[int, _Silence]
    ) -> list[_Marker]:
        """Each partition's silent assets (see :func:`features.compiled.silences`): a marker per
        silence, stamped with the partition's watermark when it was seen, with its asset's clock
        before the batch and the row of the batch after which it goes out."""
        accepted = np.zeros(len(batch), dtype=bool)
        accepted[self.engine.accepted] = True
        markers: list[_Marker] = []
        for p, (known, clock0, stale) in before.items():
            rows = np.flatnonzero(part == p)
            ids, index = known.ids, known.index
            ids_here = map(batch.asset_id.__getitem__, rows.tolist())
            asset = np.fromiter(map(index.__getitem__, ids_here), dtype=np.int64, count=len(rows))
            marked, at, after, self._watermark[p] = compiled.silences(
                asset,
                batch.ts[rows],
                accepted[rows],
                self._watermark.get(p, -math.inf),
                clock0.copy(),
                stale,
                self.spec.stale_after,
            )
            self.engine.mark_stale([ids[a] for a in np.flatnonzero(stale).tolist()])
            markers += [
                _Marker(ids[a], t, float(clock0[a]), int(rows[r]))
                for a, t, r in zip(marked.tolist(), at.tolist(), after.tolist(), strict=True)
            ]
        return markers

    def _place(
        self, markers: list[_Marker], out: list[tuple[bytes, Any]], emitted: Emitted, batch: ReadingBatch
    ) -> list[tuple[bytes, Any]]:
        """The vectors ``out`` with the markers among them where they would be had the readings come
        one at a time: a marker goes before the first vector of its asset released (its asset's
        clock passed it by the grace period) at a later row than the one that showed the silence."""
        marked = {m.asset_id for m in markers}
        rows_of: dict[str, list[int]] = defaultdict(list)  # accepted rows of the marked assets
        for i in self.engine.accepted.tolist():
            if batch.asset_id[i] in marked:
                rows_of[batch.asset_id[i]].append(i)
        vectors_of: dict[str, list[int]] = defaultdict(list)
        for i, a in enumerate(emitted.asset_id):
            if a in marked:
                vectors_of[a].append(i)
        before: dict[int, list[tuple[bytes, Any]]] = defaultdict(list)  # output index -> markers
        for m in markers:
            rows = np.asarray(rows_of[m.asset_id], dtype=np.int64)
            limit = np.maximum.accumulate(np.r_[m.clock, batch.ts[rows]])[1:] - self.spec.grace
            vectors = vectors_of[m.asset_id]
            released = rows  # each vector's release row (none without an accepted row of its asset)
            if len(rows):
                released = rows[np.minimum(np.searchsorted(limit, emitted.ts[vectors]), len(rows) - 1)]
            later = [v for v, r in zip(vectors, released.tolist(), strict=False) if r > m.row]
            marker = FeatureBlock([m.asset_id], np.array([m.ts]), self.names, np.empty((1, 0)), stale=True)
            before[later[0] if later else len(out)] += self._out(marker)
        placed: list[tuple[bytes, Any]] = []
        for i, vector in enumerate(out):
            placed += before.pop(i, [])
            placed.append(vector)
        return placed + before.pop(len(out), [])

    def _encode(self, emitted: Emitted) -> list[tuple[bytes, Any]]:
        return self._out(FeatureBlock(emitted.asset_id, emitted.ts, self.names, emitted.values))

    def _out(self, block: FeatureBlock) -> list[tuple[bytes, Any]]:
        """``block``'s rows as bus messages: JSON, or ``(block, row)`` for a scorer in this process."""
        return block.rows() if self.config.columns_in_process else block.messages()

    # -- recovery -------------------------------------------------------------------------------

    def _snapshot_path(self, partition: int) -> Path:
        assert self.config.state_dir is not None
        return self.config.state_dir / f"partition-{partition:04d}.npz"

    def _write_snapshot(self, partition: int) -> None:
        """Atomically replace the partition's snapshot: its assets' state and the offsets it covers."""
        path = self._snapshot_path(partition)
        buf = io.BytesIO()
        np.savez(
            buf,
            engine=np.frombuffer(self.engine.snapshot(self._assets.get(partition, ())), dtype=np.uint8),
            readings_next=self._next.get((self.config.readings_topic, partition), 0),
            maintenance_next=self._next.get((self.config.maintenance_topic, partition), 0),
            watermark=self._watermark.get(partition, -math.inf),
        )
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as fh:
            fh.write(buf.getvalue())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def _on_assign(self, assigned: set[TopicPartition]) -> None:
        """Keep the state of partitions still owned; forget lost ones; load snapshots of new ones."""
        owned = {p for t, p in assigned if t == self.config.readings_topic}
        for p in self._owned - owned:
            self.engine.drop(self._assets.pop(p, set()))
            self._known.pop(p, None)
            self._watermark.pop(p, None)
            for t in (self.config.readings_topic, self.config.maintenance_topic):
                self._next.pop((t, p), None)
        for p in sorted(owned - self._owned):
            if self.config.state_dir is not None and self._snapshot_path(p).is_file():
                self._load_snapshot(p)
        self._owned = owned

    def _load_snapshot(self, partition: int) -> None:
        with np.load(self._snapshot_path(partition), allow_pickle=False) as data:
            ids = self.engine.restore(data["engine"].tobytes())
            self._assets[partition] = set(ids)
            self._known.pop(partition, None)
            self._next[(self.config.readings_topic, partition)] = int(data["readings_next"])
            self._next[(self.config.maintenance_topic, partition)] = int(data["maintenance_next"])
            self._watermark[partition] = float(data["watermark"])
        log.info("partition %d: restored %d assets from its snapshot", partition, len(ids))
