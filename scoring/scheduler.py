"""Maintenance scheduler: one job per asset with an open alert, planned into crew shifts before failure.

Event time is cut into shifts of ``shift_length``; each shift has room for ``crew_capacity`` jobs.
Jobs are placed highest risk first, then earliest deadline (``ts + RUL``, the predicted failure),
each into the earliest shift with room, starting with the shift that contains ``now``. A job whose
shift does not start before its deadline is kept in the plan with ``fits=False``: flagged, never
dropped. The plan is a pure function of the open alerts and ``now``, so it is redone whenever alerts
change; :meth:`Scheduler.replan` returns only the jobs that are new or moved since the last plan, and
a ``cancelled`` copy of each job that left it (its alert cleared), so whoever acts on the schedule
(crews, the closed-loop simulator) drops it too.

Several scorers share one crew: the crew's slots are numbered across shifts (slot ``s`` of shift
``k`` is ``k * crew_capacity + s``) and slot ``g`` belongs to the features partition
``g % partitions``, so each scorer plans only into the slots of the partitions it owns
(:meth:`Scheduler.own`) and together they never book more than the crew per shift. One scorer that
owns every partition has the whole crew.

>>> s = Scheduler(crew_capacity=1, shift_length=10.0, rul_to_time=1.0)
>>> jobs = s.replan([PlanItem("a", "id-a", 3.0, 0.9, 4.0, "high", "v1"),
...                  PlanItem("b", "id-b", 3.0, 0.8, 30.0, "medium", "v1")], now=3.0)
>>> [(j.asset_id, j.planned_ts, j.fits) for j in jobs]
[('a', 0.0, True), ('b', 10.0, True)]
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from ingest.schemas import MaintenanceJob

FIELDS = MaintenanceJob.__struct_fields__


@dataclass(frozen=True, slots=True)
class PlanItem:
    """An asset to service: its open alert, the latest risk and RUL (in the profile's rul unit)."""

    asset_id: str
    alert_id: str
    ts: float
    risk: float
    rul: float
    priority: str
    model_version: str


class Scheduler:
    """Plans jobs into shifts; remembers the last plan to publish only what changed."""

    def __init__(self, crew_capacity: int, shift_length: float, rul_to_time: float) -> None:
        self.crew_capacity = crew_capacity
        self.shift_length = shift_length
        self.rul_to_time = rul_to_time
        self.jobs: dict[str, MaintenanceJob] = {}  # current plan by asset
        self.partitions = 1
        self.owned: frozenset[int] = frozenset({0})  # every slot: the whole crew

    def own(self, owned: Iterable[int], partitions: int) -> None:
        """Plan into the crew slots of the ``owned`` partitions (of ``partitions``) from now on."""
        self.owned, self.partitions = frozenset(owned), partitions

    def _room(self, shift: int) -> int:
        """Crew slots of ``shift`` that this scheduler may book."""
        first = shift * self.crew_capacity
        return sum((first + s) % self.partitions in self.owned for s in range(self.crew_capacity))

    def plan(self, items: Iterable[PlanItem], now: float) -> list[MaintenanceJob]:
        """The full plan, in placement order."""
        keyed = [(it, it.ts + max(it.rul, 0.0) * self.rul_to_time) for it in items]
        if not keyed or not self.owned:
            return []
        keyed.sort(key=lambda p: (-p[0].risk, p[1], p[0].asset_id))
        first = math.floor(now / self.shift_length)
        used: dict[int, int] = {}
        shift = first  # every shift before this one is full
        jobs = []
        for it, deadline in keyed:
            while used.get(shift, 0) >= self._room(shift):
                shift += 1
            used[shift] = used.get(shift, 0) + 1
            start = shift * self.shift_length
            jobs.append(
                MaintenanceJob(
                    job_id=hashlib.blake2b(it.alert_id.encode(), digest_size=10).hexdigest(),
                    asset_id=it.asset_id,
                    planned_ts=start,
                    deadline_ts=deadline,
                    priority=it.priority,
                    risk=it.risk,
                    fits=start < deadline,
                    model_version=it.model_version,
                )
            )
        return jobs

    def replan(self, items: Iterable[PlanItem], now: float) -> list[MaintenanceJob]:
        """Re-plan; return the jobs that are new or differ from the previous plan, then the jobs of
        the previous plan that are gone, as ``cancelled``."""
        jobs = self.plan(items, now)
        changed = [j for j in jobs if self.jobs.get(j.asset_id) != j]
        planned = {j.asset_id: j for j in jobs}
        gone = [
            msgspec.structs.replace(j, status="cancelled")
            for a, j in self.jobs.items()
            if a not in planned or planned[a].job_id != j.job_id
        ]
        self.jobs = planned
        return changed + gone

    def adopt(self, items: Iterable[PlanItem], now: float, asset_ids: set[str]) -> None:
        """Take the jobs of ``asset_ids`` into the plan without publishing them (taken over from the
        scorer that published them)."""
        for j in self.plan(items, now):
            if j.asset_id in asset_ids:
                self.jobs[j.asset_id] = j

    def forget(self, asset_ids: Iterable[str]) -> None:
        """Drop the jobs of assets handed over to another scorer (its plan has them: not cancelled)."""
        for a in asset_ids:
            self.jobs.pop(a, None)


def write_schedule(path: Path, jobs: Iterable[MaintenanceJob]) -> None:
    """Write the plan as CSV or JSON (by suffix), replacing the file atomically."""
    rows = [msgspec.structs.asdict(j) for j in jobs]
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as fh:
        if path.suffix == ".json":
            json.dump(rows, fh, indent=1)
        else:
            writer = csv.DictWriter(fh, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(rows)
    os.replace(tmp, path)
