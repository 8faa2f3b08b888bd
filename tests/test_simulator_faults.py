"""Sensor and transport faults: each kind at its configured rate, visible in the readings as the wire
would carry it, and recorded in the ground truth."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from ingest.profiles import load_profile
from simulator.config import FaultRates, FleetConfig
from simulator.fleet import SIGNALS, Fleet

# A different rate per kind (each 1.4x the one before), so a kind counted as another would show.
RATES = dict(
    zip(FaultRates.KINDS, (0.001 * 1.4 ** np.arange(len(FaultRates.KINDS))[::-1]).tolist(), strict=True)
)
FAULTS = FaultRates(
    **RATES,
    stuck_s=(300.0, 600.0),
    clock_skew_s=(600.0, 1200.0),
    late_s=(900.0, 1800.0),
)
CONFIG = FleetConfig(motors=40, interval_s=60.0, mean_onset_days=1e6, degradation_days=1.0, faults=FAULTS)
DAYS = 6


def simulate(config: FleetConfig, days: float):
    fleet = Fleet(config, seed=5)
    ticks = config.ticks(days * 86400)
    d = fleet.advance_columns(ticks)
    rest = fleet.drain_columns()
    motor = np.concatenate([d.motor, rest.motor])
    ts = np.concatenate([d.ts, rest.ts])
    values = np.concatenate([d.values, rest.values])
    events = fleet.events()
    assert not [e for e in events if e.kind != "sensor_fault"]
    return ticks * config.motors, motor, ts, values, events


@pytest.fixture(scope="module")
def faulty():
    return simulate(CONFIG, DAYS)


def _detail(event) -> dict[str, str]:
    return dict(part.split("=", 1) for part in event.detail.split())


def test_each_fault_kind_happens_at_its_rate(faulty) -> None:
    true_readings, *_, events = faulty
    counts = Counter(e.mode for e in events)
    assert set(counts) == set(FaultRates.KINDS)
    for kind, rate in RATES.items():
        # Expected 346 (sd 19) to 3,720 (sd 61); an episode cannot start while one is running, which
        # costs a few percent for stuck sensors and skewed clocks.
        assert 0.85 * rate < counts[kind] / true_readings < 1.15 * rate, kind
    assert sorted(RATES, key=counts.__getitem__) == sorted(RATES, key=RATES.__getitem__)


def test_dropouts_and_duplicates_account_for_every_reading(faulty) -> None:
    true_readings, motor, ts, values, events = faulty
    per_motor = true_readings // CONFIG.motors
    for mo in range(CONFIG.motors):
        mine = Counter(e.mode for e in events if e.asset_id == f"m{mo + 1:05d}")
        assert (motor == mo).sum() == per_motor - mine["dropout"] + mine["duplicate"]
    # A duplicate is delivered right after its original, identical.
    same = (motor[1:] == motor[:-1]) & (ts[1:] == ts[:-1]) & (values[1:] == values[:-1]).all(axis=1)
    duplicates = [e for e in events if e.mode == "duplicate"]
    nan_twins = [e for e in events if e.mode == "nan"]  # NaN != NaN: a duplicated NaN reading is not "same"
    assert len(duplicates) - len(nan_twins) <= same.sum() <= len(duplicates)
    twins = set(zip(motor[1:][same].tolist(), ts[1:][same].tolist(), strict=True))
    assert twins <= {(int(e.asset_id[1:]) - 1, e.ts) for e in duplicates}


def test_value_faults_reach_the_readings() -> None:
    only_values = FaultRates.none().with_rates(nan=0.01, spike=0.01, stuck=0.01)
    _, motor, ts, values, events = simulate(replace(CONFIG, motors=10, faults=only_values), days=1)
    upper = load_profile("motor").upper
    row = {(m, t): i for i, (m, t) in enumerate(zip(motor.tolist(), ts.tolist(), strict=True))}
    assert len(row) == len(ts)
    glitched = {(int(e.asset_id[1:]) - 1, e.ts, _detail(e)["signal"]) for e in events if e.mode != "stuck"}
    for e in events:
        mo, j = int(e.asset_id[1:]) - 1, SIGNALS.index(_detail(e)["signal"])
        assert j < 3  # never the runtime counter
        i = row[mo, e.ts]
        if e.mode == "nan":
            assert np.isnan(values[i, j])
        elif e.mode == "spike":
            assert values[i, j] > upper[j] and float(_detail(e)["value"]) == values[i, j]
        else:
            span = (motor == mo) & (ts >= e.ts) & (ts < e.ts + float(_detail(e)["duration_s"]))
            held = [i for i in np.flatnonzero(span) if (mo, ts[i], SIGNALS[j]) not in glitched]
            assert held and (values[held, j] == float(_detail(e)["value"])).all()
    assert np.isnan(values[:, 3]).sum() == 0 and (values[:, 3] <= upper[3]).all()


def test_late_and_out_of_order_readings_arrive_after_newer_ones() -> None:
    delays = FaultRates.none().with_rates(late=0.005, out_of_order=0.005)
    _, motor, ts, _, events = simulate(replace(CONFIG, motors=20, faults=delays), days=1)
    position = {(m, t): i for i, (m, t) in enumerate(zip(motor.tolist(), ts.tolist(), strict=True))}
    assert len(position) == len(ts) == 20 * 1440  # nothing lost, nothing twice
    for e in events:
        mo, delay = int(e.asset_id[1:]) - 1, float(_detail(e)["delay_s"])
        low, high = delays.late_s if e.mode == "late" else (60, 5 * 60)
        assert low <= delay <= high + 60
        at = position[mo, e.ts]
        mine = np.flatnonzero(motor == mo)
        newer_before = ts[mine[(mine < at) & (ts[mine] > e.ts)]]
        if e.ts + delay <= ts.max():
            # It arrives with the reading of its delivery tick (when that one was on time).
            assert newer_before.max() <= e.ts + delay
            assert (
                (e.ts + delay) in newer_before
                or (mo, e.ts + delay) not in position
                or any(x.asset_id == e.asset_id and x.ts == e.ts + delay for x in events)
            )
    assert {e.mode for e in events} == {"late", "out_of_order"}


def test_clock_skew_shifts_timestamps_for_a_while() -> None:
    skews = FaultRates.none().with_rates(clock_skew=0.002)
    _, motor, ts, _, events = simulate(replace(CONFIG, motors=20, faults=skews), days=1)
    off_grid = (ts - CONFIG.start_ts) % CONFIG.interval_s != 0
    explained = np.zeros(len(ts), bool)
    for e in events:
        mo, offset, span = (
            int(e.asset_id[1:]) - 1,
            float(_detail(e)["offset_s"]),
            float(_detail(e)["duration_s"]),
        )
        assert 0 < abs(offset) <= 600
        shifted = e.ts + offset + np.arange(0, span, CONFIG.interval_s)
        shifted = shifted[shifted - offset < CONFIG.start_ts + 86400]  # the run ends
        hit = (motor == mo) & np.isin(ts, shifted)
        assert hit.sum() >= len(shifted)  # every reading of the episode carries the offset
        explained |= hit
    assert off_grid.any() and explained[off_grid].all()  # and nothing else is off the grid


def test_no_faults_config_gives_a_clean_log() -> None:
    fleet = Fleet(FleetConfig(motors=5, interval_s=60.0, faults=FaultRates.none()), seed=5)
    d = fleet.advance_columns(2000)
    assert [e for e in fleet.events() if e.kind == "sensor_fault"] == []
    assert np.isfinite(d.values).all()


def test_fault_rates_are_validated() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        FaultRates().with_rates(gremlins=0.1)
    with pytest.raises(ValueError, match=r"at most 0\.5"):
        FaultRates().with_rates(dropout=0.6)
    assert FaultRates().with_rates(nan=0.01).nan == 0.01
