"""The fleet on a bus: readings to ``sensor.readings`` at a pace, maintenance orders back from
``maintenance.schedule`` (the closed loop), maintenance performed to ``maintenance.events``.

Pacing maps event time to wall time: ``realtime`` (1 simulated second per second), a factor
(``60`` = one simulated minute per second) or ``max`` (as fast as the bus takes it). A paced
staggered fleet (``FleetConfig.stagger``) sends each reading when its sampling time comes, in
sends at most every ``SEND_INTERVAL_S`` (a gateway's batching), rather than a tick at a time.

>>> from ingest.inproc import InProcessBus
>>> from simulator.config import FleetConfig
>>> bus = InProcessBus()
>>> fleet = Fleet(FleetConfig(motors=2, interval_s=60.0), seed=1)
>>> pub = Publisher(fleet, bus.producer(), Pacing.parse("max"))
>>> pub.run_once(max_ticks=3)
6
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ingest import topics
from ingest.bus import Bus, Producer
from ingest.deadletter import dead_letter_messages
from ingest.replay import parse_speed
from ingest.schemas import (
    MaintenanceEvent,
    MaintenanceJob,
    Reading,
    ReadingBatch,
    decode_many,
    encode,
    encode_readings_columnar,
)
from simulator.faults import Delivered
from simulator.fleet import Fleet
from simulator.writers import LogWriter, Summary

MAX_BATCH_READINGS = 50_000  # readings per round at ``max`` pace
SEND_INTERVAL_S = 0.02  # a paced staggered fleet's readings go out at most this often (wall time)


def encode_batch(batch: ReadingBatch) -> list[tuple[bytes, bytes]]:
    """Readings as ``(key, value)`` bus messages: :func:`ingest.schemas.encode_readings_columnar`,
    byte for byte, except for NaN. The simulator never omits a signal, so a NaN is the ``nan``
    sensor fault: it goes out as JSON ``null``, as a gateway would send it, and ingest dead-letters
    it as non_finite (``encode_readings`` would drop the signal instead)."""
    out = encode_readings_columnar(batch)
    names = batch.signals
    for row in np.flatnonzero(np.isnan(batch.values).any(axis=1)).tolist():
        values = dict(zip(names, batch.values[row].tolist(), strict=True))
        reading = Reading(asset_id=batch.asset_id[row], ts=float(batch.ts[row]), values=values)
        out[row] = (out[row][0], encode(reading))
    return out


@dataclass(frozen=True, slots=True)
class Pacing:
    """``speed``: simulated seconds per wall-clock second; None: as fast as possible."""

    speed: float | None

    @classmethod
    def parse(cls, text: str) -> Pacing:
        """``realtime``, ``max``, or a factor of real time (``60``: a simulated minute per second)."""
        word = text.strip().lower()
        return cls(1.0 if word == "realtime" else parse_speed(word))


class Publisher:
    """Advances a fleet as its pace allows and sends what it delivers.

    ``run_once`` never sleeps (a single-threaded runner interleaves it with other stages);
    ``run`` loops until ``stop`` is set or ``end_ts`` (event time) is reached. With ``log``, what is
    sent and the ground truth are also written to files (the caller closes the writer). Readings go
    to ``readings_topic``, performed maintenance to ``maintenance_topic`` (other names isolate a run).
    """

    def __init__(
        self,
        fleet: Fleet,
        producer: Producer,
        pacing: Pacing,
        *,
        end_ts: float | None = None,
        log: LogWriter | None = None,
        clock: Callable[[], float] = time.monotonic,
        readings_topic: str = topics.READINGS,
        maintenance_topic: str = topics.MAINTENANCE,
    ) -> None:
        self.fleet = fleet
        self.readings_topic = readings_topic
        self.maintenance_topic = maintenance_topic
        self.producer = producer
        self.pacing = pacing
        self.end_tick = (
            None if end_ts is None else math.ceil((end_ts - fleet.config.start_ts) / fleet.config.interval_s)
        )
        self.log = log
        self.clock = clock
        self.summary = Summary()
        self._start: tuple[float, int] | None = None  # (wall time, tick) when pacing began
        self._max_ticks = max(1, MAX_BATCH_READINGS // fleet.config.motors)
        # Readings simulated and not sent yet, with their wall due times when this fleet holds them.
        self._holds = fleet.config.stagger and pacing.speed is not None
        self._offsets = fleet.config.sampling_offsets()
        self._held: list[tuple[bytes, bytes]] = []
        self._held_due = np.empty(0)
        self._last_send = -math.inf

    @property
    def done(self) -> bool:
        """The end is reached and every reading is sent."""
        return self._ended and not self._held

    @property
    def _ended(self) -> bool:
        return self.end_tick is not None and self.fleet.tick >= self.end_tick

    def due_ticks(self) -> int:
        """Ticks whose event time has come by the pace (at ``max``: a round's worth)."""
        if self.pacing.speed is None:
            n = self._max_ticks
        else:
            if self._start is None:
                self._start = (self.clock(), self.fleet.tick)
            wall0, tick0 = self._start
            elapsed = (self.clock() - wall0) * self.pacing.speed
            n = tick0 + int(elapsed // self.fleet.config.interval_s) + 1 - self.fleet.tick
        if self.end_tick is not None:
            n = min(n, self.end_tick - self.fleet.tick)
        return max(0, n)

    def seconds_until_due(self) -> float:
        """Wall seconds until the next tick is due, or the next held reading may go out."""
        if self.pacing.speed is None or self._start is None:
            return 0.0
        wall0, tick0 = self._start
        due_at = wall0 + (self.fleet.tick - tick0) * self.fleet.config.interval_s / self.pacing.speed
        if self._held:
            due_at = min(due_at, max(self._held_due[0], self._last_send + SEND_INTERVAL_S))
        return max(0.0, due_at - self.clock())

    def run_once(self, max_ticks: int | None = None) -> int:
        """Simulate the ticks now due (at most ``max_ticks``) and send the readings now due (all of
        them, but for a paced staggered fleet); returns how many were sent."""
        n = self.due_ticks()
        if max_ticks is not None:
            n = min(n, max_ticks)
        performed: list[MaintenanceEvent] = []
        if self._holds:
            for _ in range(n):  # a tick at a time: each reading's due time is its tick's plus its offset
                performed += self._simulate(1)
        elif n:
            performed = self._simulate(n)
        sent = self._send_due()
        if performed:
            self.producer.send_batch(
                self.maintenance_topic, [(m.asset_id.encode(), encode(m)) for m in performed]
            )
        return sent

    def _simulate(self, n: int) -> list[MaintenanceEvent]:
        """Simulate ``n`` ticks: hold their readings for sending; returns the maintenance performed."""
        tick = self.fleet.tick
        delivered = self.fleet.advance_columns(n)
        if self._ended:
            delivered = Delivered.concat([delivered, self.fleet.drain_columns()])
        self._held += encode_batch(self.fleet.to_batch(delivered))
        if self._holds:
            wall0, tick0 = self._start
            since = (tick - tick0) * self.fleet.config.interval_s + self._offsets[delivered.motor]
            due = wall0 + since / self.pacing.speed  # sampling times, in wall time
            last = self._held_due[-1] if len(self._held_due) else -math.inf
            # In sending order: readings drained from transit at the end go out no sooner than those before.
            self._held_due = np.r_[self._held_due, np.maximum.accumulate(np.r_[last, due])[1:]]
        events = self.fleet.events()
        if self.log is not None:
            self.log.write_readings(delivered)
            self.log.write_events(events)
        self.summary.count(events)
        return [
            MaintenanceEvent(asset_id=e.asset_id, ts=e.ts, action=e.mode)
            for e in events
            if e.kind == "maintenance"
        ]

    def _send_due(self, everything: bool = False) -> int:
        """Send the held readings now due (a paced staggered fleet's at most every SEND_INTERVAL_S),
        or ``everything`` held."""
        if not self._held:
            return 0
        count = len(self._held)
        if self._holds and not everything:
            now = self.clock()
            if now < self._last_send + SEND_INTERVAL_S:
                return 0
            count = int(np.searchsorted(self._held_due, now, side="right"))
            if count == 0:
                return 0
            self._last_send = now
        self._held_due = self._held_due[count:]
        messages, self._held = self._held[:count], self._held[count:]
        self.producer.send_batch(self.readings_topic, messages)
        self.summary.readings += count
        return count

    def run(
        self,
        stop: threading.Event,
        listener: MaintenanceListener | None = None,
        on_progress: Callable[[Publisher], None] | None = None,
    ) -> None:
        """Publish until ``stop`` is set or the end is reached; flush before returning."""
        try:
            while not stop.is_set() and not self.done:
                if listener is not None:
                    listener.run_once()
                sent = self.run_once()
                if on_progress is not None:
                    on_progress(self)
                if not sent:
                    stop.wait(min(0.25, self.seconds_until_due()))
            self._send_due(everything=True)  # stopped: what was simulated (and logged) goes out
        finally:
            self.producer.flush()


class MaintenanceListener:
    """Consumes ``maintenance.schedule`` and orders each planned job on the fleet at its planned time.

    A job re-published before it ran (re-planned) moves the order; one re-published after it ran is
    ignored; a cancelled job withdraws its order if that has not run yet. Undecodable messages go to
    ``maintenance.schedule.dlq``; jobs for assets that are not in this fleet are counted in
    ``foreign`` and skipped.
    """

    def __init__(
        self, fleet: Fleet, bus: Bus, group_id: str = "motorwatch-simulator", topic: str = topics.SCHEDULE
    ) -> None:
        self.fleet = fleet
        self.consumer = bus.consumer([topic], group_id)
        self.producer = bus.producer()
        self.applied: dict[str, float] = {}  # job id -> event time the order takes effect
        self.pending: dict[str, str] = {}  # asset id -> job id of its latest order
        self.foreign = 0
        self.rejected = 0

    def run_once(self, max_records: int = 1024, timeout_s: float = 0.0) -> int:
        records = self.consumer.poll_batch(max_records, timeout_s)
        if not records:
            return 0
        jobs, rejects = decode_many([r.value for r in records], MaintenanceJob)
        for _, job in jobs:
            done_at = self.applied.get(job.job_id)
            if done_at is not None and done_at < self.fleet.now:
                continue
            if job.status == "cancelled":
                if self.pending.get(job.asset_id) == job.job_id:
                    self.fleet.cancel_maintenance(job.asset_id)
                    del self.pending[job.asset_id]
                continue
            try:
                self.applied[job.job_id] = self.fleet.apply_maintenance(job.asset_id, job.planned_ts)
                self.pending[job.asset_id] = job.job_id
            except KeyError:
                self.foreign += 1
        if rejects:
            self.rejected += len(rejects)
            for topic, letters in dead_letter_messages(records, rejects).items():
                self.producer.send_batch(topic, letters)
            self.producer.flush()
        self.consumer.commit()
        return len(records)

    def close(self) -> None:
        self.consumer.close()
        self.producer.close()
