"""Ground truth: what really happened to the fleet, written beside the readings.

Kinds (``Event.kind``) and their ``mode``:

- ``failure``: the motor stopped at ``ts`` (its first missing reading); mode = failure mode.
- ``onset``: a precursor started to grow at ``ts``; mode = failure mode. Absent for sudden failures.
  A motor already degrading when the simulation starts gets an onset before the start, estimated
  from its running time (detail ``before_start``).
- ``maintenance``: the motor is back in service with restored health at ``ts``; mode = ``corrective``
  (repair after a failure) or ``preventive`` (a maintenance order); detail gives the downtime.
- ``sensor_fault``: mode = fault kind (:attr:`simulator.config.FaultRates.KINDS`). Point faults get
  one event per affected reading, at that reading's ``ts`` as delivered (so they join the log on
  ``(asset_id, ts)``); episodes (``stuck``, ``clock_skew``) get one event when they start.
"""

from __future__ import annotations

from typing import NamedTuple

KINDS = ("maintenance", "onset", "failure", "sensor_fault")
_RANK = {k: i for i, k in enumerate(KINDS)}


class Event(NamedTuple):
    asset_id: str
    ts: float
    kind: str
    mode: str
    detail: str


class EventLog:
    """Events of one generation step, released in a fixed order: (tick, motor, kind, arrival).

    The order depends only on what happened, not on how the run was cut into steps.
    """

    def __init__(self, asset_ids: tuple[str, ...]) -> None:
        self._ids = asset_ids
        self._pending: list[tuple[int, int, int, int, Event]] = []

    def add(self, tick: int, motor: int, ts: float, kind: str, mode: str, detail: str = "") -> None:
        event = Event(self._ids[motor], float(ts), kind, mode, detail)
        self._pending.append((tick, motor, _RANK[kind], len(self._pending), event))

    def take(self) -> list[Event]:
        """Everything added since the last call, in order."""
        self._pending.sort(key=lambda p: p[:4])
        out = [p[4] for p in self._pending]
        self._pending.clear()
        return out
