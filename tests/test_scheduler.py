"""Maintenance scheduler: crew capacity per shift, deadlines, ordering, re-planning, file output."""

from __future__ import annotations

import csv
import json
from collections import Counter

from scoring.scheduler import PlanItem, Scheduler, write_schedule


def item(asset: str, risk: float, rul: float, ts: float = 0.0) -> PlanItem:
    return PlanItem(asset, f"alert-{asset}", ts, risk, rul, "high", "v7")


def test_capacity_per_shift_is_respected_and_highest_risk_goes_first():
    s = Scheduler(crew_capacity=2, shift_length=8.0, rul_to_time=1.0)
    items = [item(f"m{i}", risk=0.5 + i / 100, rul=1000.0) for i in range(7)]
    jobs = s.plan(items, now=20.0)  # now is inside shift [16, 24)
    per_shift = Counter(j.planned_ts for j in jobs)
    assert per_shift == {16.0: 2, 24.0: 2, 32.0: 2, 40.0: 1}
    assert [j.asset_id for j in jobs] == [f"m{i}" for i in reversed(range(7))]
    assert all(j.fits and j.model_version == "v7" for j in jobs)


def test_equal_risk_goes_by_earliest_deadline_and_rul_unit_converts_to_event_time():
    s = Scheduler(crew_capacity=1, shift_length=3600.0, rul_to_time=3600.0)  # RUL in hours, ts in seconds
    jobs = s.plan([item("late", 0.9, rul=10.0), item("soon", 0.9, rul=2.0)], now=0.0)
    assert [(j.asset_id, j.planned_ts, j.deadline_ts) for j in jobs] == [
        ("soon", 0.0, 7200.0),
        ("late", 3600.0, 36000.0),
    ]


def test_job_that_cannot_fit_before_failure_is_flagged_not_dropped():
    s = Scheduler(crew_capacity=1, shift_length=10.0, rul_to_time=1.0)
    # Three assets all failing within 15 time units, one crew slot per 10: the third cannot make it.
    jobs = s.plan([item("a", 0.9, 12.0), item("b", 0.8, 15.0), item("c", 0.7, 14.0)], now=0.0)
    assert [(j.asset_id, j.planned_ts, j.fits) for j in jobs] == [
        ("a", 0.0, True),
        ("b", 10.0, True),
        ("c", 20.0, False),
    ]


def test_replan_returns_only_new_or_moved_jobs_with_stable_ids():
    s = Scheduler(crew_capacity=1, shift_length=10.0, rul_to_time=1.0)
    first = s.replan([item("a", 0.7, 100.0), item("b", 0.6, 100.0)], now=0.0)
    assert [j.asset_id for j in first] == ["a", "b"]
    assert s.replan([item("a", 0.7, 100.0), item("b", 0.6, 100.0)], now=5.0) == []
    # A riskier asset arrives: it takes the first slot and pushes the others back.
    moved = s.replan([item("a", 0.7, 100.0), item("b", 0.6, 100.0), item("c", 0.95, 100.0)], now=5.0)
    assert [(j.asset_id, j.planned_ts) for j in moved] == [("c", 0.0), ("a", 10.0), ("b", 20.0)]
    assert moved[1].job_id == first[0].job_id
    assert set(s.jobs) == {"a", "b", "c"}


def test_a_job_that_leaves_the_plan_is_published_cancelled_once_unless_handed_over():
    s = Scheduler(crew_capacity=1, shift_length=10.0, rul_to_time=1.0)
    first = {j.asset_id: j for j in s.replan([item("a", 0.9, 100.0), item("b", 0.8, 100.0)], now=0.0)}
    # a's alert cleared: its job is withdrawn, b moves up into the freed shift.
    out = s.replan([item("b", 0.8, 100.0)], now=1.0)
    assert [(j.asset_id, j.planned_ts, j.status) for j in out] == [
        ("b", 0.0, "planned"),
        ("a", 0.0, "cancelled"),
    ]
    assert out[1].job_id == first["a"].job_id
    assert s.replan([item("b", 0.8, 100.0)], now=2.0) == [], "withdrawn once"
    # b's asset moved to another scorer: its plan goes on there, nothing is withdrawn here.
    s.forget(["b"])
    assert s.replan([], now=3.0) == [] and s.jobs == {}
    # Taken over from another scorer: not re-published, but withdrawn here when its alert clears.
    s.adopt([item("c", 0.7, 100.0)], now=4.0, asset_ids={"c"})
    assert s.replan([item("c", 0.7, 100.0)], now=4.0) == []
    assert [(j.asset_id, j.status) for j in s.replan([], now=5.0)] == [("c", "cancelled")]


def test_schedule_written_as_csv_and_json(tmp_path):
    s = Scheduler(crew_capacity=1, shift_length=10.0, rul_to_time=1.0)
    jobs = s.plan([item("a", 0.9, 5.0), item("b", 0.8, 5.0)], now=0.0)
    write_schedule(tmp_path / "plan.csv", jobs)
    write_schedule(tmp_path / "plan.json", jobs)
    with (tmp_path / "plan.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["asset_id"], r["fits"]) for r in rows] == [("a", "True"), ("b", "False")]
    data = json.loads((tmp_path / "plan.json").read_text())
    assert [(d["asset_id"], d["planned_ts"], d["deadline_ts"], d["fits"]) for d in data] == [
        ("a", 0.0, 5.0, True),
        ("b", 10.0, 5.0, False),
    ]


def test_scorers_sharing_a_crew_book_each_slot_once_and_one_owner_has_the_whole_crew():
    items = [item(f"m{i}", risk=0.5 + i / 100, rul=1000.0) for i in range(30)]
    whole = Scheduler(crew_capacity=3, shift_length=10.0, rul_to_time=1.0)
    whole.own(range(6), 6)
    alone = Counter(j.planned_ts for j in whole.plan(items, now=0.0))
    assert set(alone.values()) == {3}, "every partition owned: the whole crew, as a single scorer"
    # Three scorers own two partitions each and plan their own assets: never more than the crew.
    booked: Counter = Counter()
    for owned in ({0, 3}, {1, 4}, {2, 5}):
        s = Scheduler(crew_capacity=3, shift_length=10.0, rul_to_time=1.0)
        s.own(owned, 6)
        mine = items[min(owned) :: 3]
        booked.update(j.planned_ts for j in s.plan(mine, now=0.0))
    assert max(booked.values()) <= 3 and sum(booked.values()) == 30
    assert max(booked) <= 10.0 * 14, "each scorer's share is about a third of the crew"
    nobody = Scheduler(crew_capacity=3, shift_length=10.0, rul_to_time=1.0)
    nobody.own([], 6)
    assert nobody.plan(items, now=0.0) == []
