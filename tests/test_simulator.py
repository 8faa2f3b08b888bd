"""The fleet model: healthy signal ranges, duty cycles and runtime, degradation before failure, repairs
and maintenance."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from simulator.config import FaultRates, FleetConfig
from simulator.fleet import Fleet
from simulator.groundtruth import Event

MINUTE = 60.0
CLEAN = FleetConfig(motors=40, interval_s=MINUTE, faults=FaultRates.none())
HEALTHY = replace(CLEAN, mean_onset_days=1e6, degradation_days=1.0)  # nobody degrades for ages
FAILING = replace(CLEAN, motors=30, mean_onset_days=4.0, degradation_days=3.0)  # lots of failures


def run(config: FleetConfig, days: float, seed: int = 1) -> tuple[Fleet, dict[str, np.ndarray], list[Event]]:
    fleet = Fleet(config, seed)
    d = fleet.advance_columns(config.ticks(days * 86400))
    cols = {
        "motor": d.motor,
        "ts": d.ts,
        **{s: d.values[:, j] for j, s in enumerate(fleet.profile.signal_names)},
    }
    return fleet, cols, fleet.events()


@pytest.fixture(scope="module")
def healthy():
    return run(HEALTHY, days=8)


@pytest.fixture(scope="module")
def failing():
    return run(FAILING, days=20)


def test_healthy_motors_read_sane_values_in_iso_10816_good_or_satisfactory(healthy) -> None:
    fleet, r, events = healthy
    assert [e for e in events if e.kind in ("failure", "onset")] == []
    rated = fleet.nameplates.rated_current_a[r["motor"]]
    running = r["current_a"] > 0
    assert 0.3 < running.mean() < 0.95  # motors start and stop with their duty cycles
    # ISO 10816 class II (15-75 kW): good < 1.12 mm/s, satisfactory < 2.8 mm/s.
    assert r["vibration_mm_s"][running].max() < 2.8
    assert np.median(r["vibration_mm_s"][running]) < 1.5
    assert r["vibration_mm_s"][~running].max() < 0.2
    assert r["current_a"][running].min() > 0.2 * rated[running].min()
    assert (r["current_a"][running] <= 1.2 * rated[running]).all()
    assert r["temperature_c"].min() > 0.0 and r["temperature_c"].max() < 110.0
    # Temperature follows load: warmer while running than while stopped.
    assert r["temperature_c"][running].mean() > r["temperature_c"][~running].mean() + 10


def test_every_motor_reports_every_interval_while_healthy(healthy) -> None:
    _fleet, r, _ = healthy
    ticks = HEALTHY.ticks(8 * 86400)
    assert len(r["ts"]) == ticks * HEALTHY.motors
    assert np.array_equal(r["motor"][: HEALTHY.motors], np.arange(HEALTHY.motors))
    assert r["ts"][0] == HEALTHY.start_ts and np.all(np.diff(r["ts"]) >= 0)


@pytest.mark.parametrize("fixture", ["healthy", "failing"])
def test_runtime_is_monotonic_and_advances_only_while_running(fixture, request) -> None:
    _, r, _ = request.getfixturevalue(fixture)
    step_h = MINUTE / 3600.0
    for mo in np.unique(r["motor"]):
        sel = r["motor"] == mo
        runtime, running = r["runtime_h"][sel], r["current_a"][sel] > 0
        gained = np.diff(runtime)
        assert (gained >= 0).all()
        # Between consecutive readings, runtime gains one interval per tick spent running.
        assert np.allclose(gained[running[1:] & (np.diff(r["ts"][sel]) == MINUTE)], step_h)
        assert (gained[~running[1:]] == 0).all()


def test_a_failed_motor_is_silent_until_its_corrective_repair(failing) -> None:
    _, r, events = failing
    failures = [e for e in events if e.kind == "failure"]
    assert len(failures) >= 10
    for f in failures:
        mo = int(f.asset_id[1:]) - 1
        later = [e for e in events if e.asset_id == f.asset_id and e.kind == "maintenance" and e.ts > f.ts]
        back = later[0].ts if later else np.inf
        ts = r["ts"][r["motor"] == mo]
        assert not ((ts >= f.ts) & (ts < back)).any()
        assert (ts == f.ts - MINUTE).any()  # it reported right up to the failure
        if later:
            assert later[0].mode == "corrective" and (ts == back).any()
            assert 12 * 3600 <= back - f.ts <= 48 * 3600 + MINUTE


def _window(r, mo: int, start: float, end: float, signal: str, running_only: bool = True) -> np.ndarray:
    sel = (r["motor"] == mo) & (r["ts"] >= start) & (r["ts"] < end)
    if running_only:
        sel &= r["current_a"] > 0
    return r[signal][sel]


def _onset_of(failure: Event, events: list[Event]) -> Event | None:
    """The onset in the same life as ``failure`` (since the motor's last repair), if any."""
    life = []
    for e in events:
        if e.asset_id != failure.asset_id:
            continue
        if e == failure:
            break
        life = [] if e.kind == "maintenance" else [*life, e]
    onsets = [e for e in life if e.kind == "onset"]
    assert len(onsets) <= 1
    return onsets[0] if onsets else None


def test_precursor_modes_degrade_before_failure_and_sudden_ones_do_not(failing) -> None:
    _fleet, r, events = failing
    seen = set()
    for f in (e for e in events if e.kind == "failure"):
        mo = int(f.asset_id[1:]) - 1
        onset = _onset_of(f, events)
        if f.mode == "sudden":
            assert onset is None
            late = _window(r, mo, f.ts - 12 * 3600, f.ts, "vibration_mm_s")
            early = _window(r, mo, f.ts - 7 * 86400, f.ts - 5 * 86400, "vibration_mm_s")
            if len(late) and len(early):
                assert late.mean() < 1.5 * early.mean()
            seen.add(f.mode)
            continue
        assert onset is not None and onset.mode == f.mode and onset.ts < f.ts
        if onset.ts - 12 * 3600 < FAILING.start_ts or onset.ts - f.ts > -24 * 3600:
            continue  # need a healthy stretch before onset and a day of precursor to compare
        healthy = (onset.ts - 12 * 3600, onset.ts)
        last = (f.ts - 12 * 3600, f.ts)
        if f.mode == "bearing":
            before, after = (_window(r, mo, *w, "vibration_mm_s") for w in (healthy, last))
            assert after.mean() > 2.5 * before.mean()
        elif f.mode == "insulation":
            before, after = (_window(r, mo, *w, "temperature_c") for w in (healthy, last))
            assert after.mean() > before.mean() + 5.0
        elif f.mode == "electrical":
            # erratic current: the relative tick-to-tick jitter grows
            before, after = (_window(r, mo, *w, "current_a") for w in (healthy, last))
            jitter = [np.std(np.diff(x)) / x.mean() for x in (before, after)]
            assert jitter[1] > 2 * jitter[0]
        seen.add(f.mode)
    assert seen == {"bearing", "insulation", "electrical", "sudden"}


def test_failures_are_frequent_enough_to_learn_from() -> None:
    fleet = Fleet(FleetConfig(motors=50, interval_s=MINUTE, faults=FaultRates.none()), seed=7)
    fleet.advance_columns(10 * 1440)
    failures = [e for e in fleet.events() if e.kind == "failure"]
    assert len(failures) >= 3  # a 50-motor, 10-day demo sees several failures


def test_maintenance_restores_health_and_prevents_the_failure(failing) -> None:
    _, r, events = failing
    failure, onset = next(
        (f, o)
        for f in events
        if f.kind == "failure" and f.mode == "bearing"
        for o in [_onset_of(f, events)]
        if FAILING.start_ts + 12 * 3600 < o.ts < f.ts - 36 * 3600
    )
    mo = int(failure.asset_id[1:]) - 1
    # Replay the same fleet, ordering maintenance 12 h before that failure.
    fleet = Fleet(FAILING, seed=1)
    order_ts = failure.ts - 12 * 3600
    fleet.advance_columns(FAILING.ticks(order_ts - 6 * 3600 - FAILING.start_ts))
    assert fleet.apply_maintenance(failure.asset_id, order_ts) == order_ts
    d = fleet.advance_columns(FAILING.ticks(failure.ts + 2 * 86400 - fleet.now))
    mine = [e for e in fleet.events() if e.asset_id == failure.asset_id]
    done = [e for e in mine if e.kind == "maintenance"]
    assert done[0].mode == "preventive" and done[0].ts == order_ts + FAILING.maintenance_hours * 3600
    assert failure.ts not in [e.ts for e in mine if e.kind == "failure"]
    after = {"motor": d.motor, "ts": d.ts, "current_a": d.values[:, 2], "vibration_mm_s": d.values[:, 1]}
    baseline = _window(r, mo, onset.ts - 12 * 3600, onset.ts, "vibration_mm_s").mean()
    sick = _window(after, mo, order_ts - 6 * 3600, order_ts, "vibration_mm_s").mean()
    restored = _window(after, mo, done[0].ts, done[0].ts + 12 * 3600, "vibration_mm_s").mean()
    assert sick > 2 * baseline
    assert restored < 1.3 * baseline
    # Down (no readings) while under maintenance.
    ts = d.ts[d.motor == mo]
    assert not ((ts >= order_ts) & (ts < done[0].ts)).any()


def test_a_maintenance_order_repairs_a_failed_motor_sooner(failing) -> None:
    _, _, events = failing
    failure = next(e for e in events if e.kind == "failure")
    fleet = Fleet(FAILING, seed=1)
    fleet.advance_columns(FAILING.ticks(failure.ts - FAILING.start_ts) + 1)
    fleet.apply_maintenance(failure.asset_id, failure.ts + 3600)
    fleet.advance_columns(FAILING.ticks(6 * 3600))
    back = [e for e in fleet.events() if e.asset_id == failure.asset_id and e.kind == "maintenance"]
    assert back[0].ts == failure.ts + 3600 + FAILING.maintenance_hours * 3600
    assert back[0].mode == "corrective"


def test_maintenance_of_an_unknown_motor_is_refused() -> None:
    with pytest.raises(KeyError, match="m00099"):
        Fleet(replace(CLEAN, motors=3), seed=1).apply_maintenance("m00099", CLEAN.start_ts)


def test_asset_ids_nameplates_and_batches_follow_the_contract() -> None:
    fleet = Fleet(replace(CLEAN, motors=12), seed=3)
    assert fleet.asset_ids[0] == "m00001" and fleet.asset_ids[-1] == "m00012"
    batch = fleet.step()
    assert batch.signals == ("temperature_c", "vibration_mm_s", "current_a", "runtime_h")
    assert batch.asset_id == list(fleet.asset_ids) and (batch.ts == CLEAN.start_ts).all()
    assert batch.values.shape == (12, 4) and np.isfinite(batch.values).all()
    described = fleet.describe()
    assert described["seed"] == 3 and len(described["motors"]) == 12
    assert described["motors"][0]["asset_id"] == "m00001" and described["motors"][0]["rated_current_a"] > 0
