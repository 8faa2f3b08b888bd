"""Simulator outputs: byte-identical log files whatever the chunking, the CLI, the bus publisher with
its pacing, and the closed maintenance loop over maintenance.schedule."""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from ingest import topics
from ingest.inproc import InProcessBus
from ingest.profiles import load_profile
from ingest.schemas import (
    MaintenanceEvent,
    MaintenanceJob,
    ReadingBatch,
    Reason,
    decode_many,
    decode_readings,
    encode,
    encode_readings_columnar,
)
from motorwatch.cli import main
from simulator import writers
from simulator.config import FaultRates, FleetConfig, parse_duration
from simulator.fleet import SIGNALS, Fleet
from simulator.publish import SEND_INTERVAL_S, MaintenanceListener, Pacing, Publisher, encode_batch
from simulator.writers import LogWriter, simulate_to_files

# Frequent failures and faults, so every kind of row is in a small log.
CONFIG = FleetConfig(
    motors=8,
    interval_s=60.0,
    mean_onset_days=2.0,
    degradation_days=1.0,
    faults=FaultRates(**{k: 0.003 for k in FaultRates.KINDS}),
)
DAYS = 3.0
FILES = ("readings", "events")


def _bytes(out: Path, fmt: str) -> dict[str, bytes]:
    return {name: (out / f"{name}.{fmt}").read_bytes() for name in FILES} | {
        "fleet": (out / "fleet.json").read_bytes()
    }


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_same_seed_gives_identical_files_whatever_the_chunk_size(tmp_path, monkeypatch, fmt) -> None:
    monkeypatch.setattr(writers, "ROW_GROUP_ROWS", 1000)  # many row groups, cut across chunks
    runs = {chunk: tmp_path / f"chunk{chunk}" for chunk in (None, 7, 1000)}
    for chunk, out in runs.items():
        simulate_to_files(CONFIG, 3, out, DAYS * 86400, fmt, chunk_ticks=chunk)
    first, *others = (_bytes(out, fmt) for out in runs.values())
    for other in others:
        assert other == first
    simulate_to_files(CONFIG, 4, tmp_path / "seed4", DAYS * 86400, fmt)
    assert _bytes(tmp_path / "seed4", fmt)["readings"] != first["readings"]


def test_log_tables_follow_the_contract(tmp_path) -> None:
    summary = simulate_to_files(CONFIG, 3, tmp_path, DAYS * 86400)
    readings = pd.read_parquet(tmp_path / "readings.parquet")
    events = pd.read_parquet(tmp_path / "events.parquet")
    assert list(readings.columns) == [
        "asset_id",
        "ts",
        "temperature_c",
        "vibration_mm_s",
        "current_a",
        "runtime_h",
    ]
    assert [str(t) for t in readings.dtypes.iloc[1:]] == ["float64"] * 5
    assert readings["asset_id"].str.fullmatch(r"m000\d\d").all() and len(readings) == summary.readings
    assert readings["temperature_c"].isna().sum() > 0  # the nan fault
    assert list(events.columns) == ["asset_id", "ts", "kind", "mode", "detail"]
    assert set(events["kind"]) == {"failure", "onset", "maintenance", "sensor_fault"}
    assert sum(events["kind"] == "failure") == summary.events["failure"] > 0
    fleet = json.loads((tmp_path / "fleet.json").read_text())
    assert fleet["seed"] == 3 and fleet["config"]["motors"] == 8 and len(fleet["motors"]) == 8
    csv_dir = tmp_path / "csv"
    simulate_to_files(CONFIG, 3, csv_dir, DAYS * 86400, "csv")
    again = pd.read_csv(csv_dir / "readings.csv")
    pd.testing.assert_frame_equal(again, readings, check_dtype=False)


def test_cli_writes_logs_and_is_deterministic(tmp_path) -> None:
    runner = CliRunner()
    args = ["simulate", "--motors", "5", "--days", "0.5", "--interval", "60s", "--seed", "9", "--no-progress"]
    for name in ("a", "b"):
        result = runner.invoke(main, [*args, "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        assert "readings" in result.output
    assert _bytes(tmp_path / "a", "parquet") == _bytes(tmp_path / "b", "parquet")
    assert len(pd.read_parquet(tmp_path / "a" / "readings.parquet")) > 5 * 720 * 0.98
    clean = runner.invoke(main, [*args, "--no-faults", "--fault", "spike=0.5", "--out", str(tmp_path / "c")])
    assert clean.exit_code == 0, clean.output
    events = pd.read_parquet(tmp_path / "c" / "events.parquet")
    assert set(events.loc[events["kind"] == "sensor_fault", "mode"]) == {"spike"}
    bad = runner.invoke(main, [*args, "--fault", "gremlins=0.1", "--out", str(tmp_path / "d")])
    assert bad.exit_code != 0 and "unknown fault" in bad.output


def test_parse_duration() -> None:
    assert [parse_duration(x) for x in ("60s", "1m", "2h", "1.5d", "250ms", "42")] == [
        60,
        60,
        7200,
        129600,
        0.25,
        42,
    ]
    with pytest.raises(ValueError):
        parse_duration("soon")


def test_encoder_matches_ingest_and_sends_nan_as_null() -> None:
    fleet = Fleet(replace(CONFIG, faults=FaultRates.none().with_rates(nan=0.05)), seed=1)
    batch = fleet.advance(50)
    nan_rows = np.isnan(batch.values).any(axis=1)
    assert nan_rows.any()
    mine, theirs = encode_batch(batch), encode_readings_columnar(batch)
    assert [m for m, bad in zip(mine, nan_rows, strict=True) if not bad] == [
        t for t, bad in zip(theirs, nan_rows, strict=True) if not bad
    ]
    row = int(np.flatnonzero(nan_rows)[0])
    assert b":null" in mine[row][1] and mine[row][0] == batch.asset_id[row].encode()
    # Ingest dead-letters exactly the NaN readings, as non_finite.
    _, rejects = decode_readings([v for _, v in mine], load_profile("motor"))
    assert sorted(r.index for r in rejects) == np.flatnonzero(nan_rows).tolist()
    assert {r.reason for r in rejects} == {Reason.NON_FINITE}


def _drain(bus: InProcessBus, topic: str) -> list:
    consumer = bus.consumer([topic], f"test-{uuid.uuid4().hex}")
    out = []
    while batch := consumer.poll_batch(100_000, timeout_s=0.05):
        out.extend(batch)
    consumer.close()
    return out


def test_publisher_sends_every_reading_and_ingest_accounts_for_each() -> None:
    bus = InProcessBus()
    fleet = Fleet(CONFIG, seed=2)
    publisher = Publisher(fleet, bus.producer(), Pacing.parse("max"), end_ts=CONFIG.start_ts + DAYS * 86400)
    publisher.run(threading.Event())
    assert publisher.done
    records = _drain(bus, topics.READINGS)
    assert len(records) == publisher.summary.readings
    batch, rejects = decode_readings([r.value for r in records], load_profile("motor"))
    reasons = {r.reason for r in rejects}
    assert reasons == {Reason.NON_FINITE, Reason.OUT_OF_RANGE}  # the nan and spike faults
    assert len(batch) + len(rejects) == len(records)
    assert (
        sum(r.reason == Reason.OUT_OF_RANGE for r in rejects)
        == publisher.summary.events["sensor_fault:spike"]
    )
    # Keyed by asset; every repair is announced on maintenance.events.
    assert {r.key for r in records} == {a.encode() for a in fleet.asset_ids}
    repairs, bad = decode_many([r.value for r in _drain(bus, topics.MAINTENANCE)], MaintenanceEvent)
    assert not bad and len(repairs) == publisher.summary.events["maintenance"] > 0
    assert {m.action for _, m in repairs} == {"corrective"}


def test_the_bus_carries_the_log_files_readings_byte_for_byte_whatever_the_batch_size(tmp_path) -> None:
    duration = 86400.0
    files = tmp_path / "files"
    simulate_to_files(CONFIG, 3, files, duration)
    logged = pd.read_parquet(files / "readings.parquet")
    sent = {}
    for max_ticks in (1, 17, None):
        bus, fleet = InProcessBus(), Fleet(CONFIG, seed=3)
        out = tmp_path / f"bus-{max_ticks}"
        log = LogWriter(out, fleet.asset_ids)
        end_ts = CONFIG.start_ts + duration
        publisher = Publisher(fleet, bus.producer(), Pacing.parse("max"), end_ts=end_ts, log=log)
        while not publisher.done:
            publisher.run_once(max_ticks=max_ticks)
        log.close(fleet.describe())
        # Per asset in sending order (the drain returns partition after partition; sorting is stable).
        sent[max_ticks] = sorted(((r.key, r.value) for r in _drain(bus, topics.READINGS)), key=lambda m: m[0])
        # What a run on the bus logs beside it is the file target's output, byte for byte.
        for name in FILES:
            assert (out / f"{name}.parquet").read_bytes() == (files / f"{name}.parquet").read_bytes()
    first, *others = sent.values()
    assert all(other == first for other in others)
    values = logged[list(SIGNALS)].to_numpy()
    batch = ReadingBatch(
        SIGNALS, logged["asset_id"].tolist(), logged["ts"].to_numpy(), values, np.arange(len(logged))
    )
    assert first == sorted(encode_batch(batch), key=lambda m: m[0]) and len(first) > 8 * 1440 * 0.5


def test_pacing_follows_the_clock() -> None:
    now = [100.0]
    fleet = Fleet(replace(CONFIG, faults=FaultRates.none()), seed=2)
    publisher = Publisher(fleet, InProcessBus().producer(), Pacing.parse("60"), clock=lambda: now[0])
    assert publisher.run_once() == CONFIG.motors  # the first tick is due at once
    assert publisher.run_once() == 0 and publisher.seconds_until_due() == pytest.approx(1.0)
    now[0] += 10.0  # 10 s at 60x = 10 simulated minutes = 10 ticks
    assert publisher.run_once() == 10 * CONFIG.motors
    assert fleet.tick == 11
    assert Pacing.parse("realtime").speed == 1.0 and Pacing.parse("max").speed is None
    with pytest.raises(ValueError):
        Pacing.parse("fast")


def test_a_staggered_fleet_samples_in_turn_over_each_interval() -> None:
    config = replace(CONFIG, interval_s=60.0, faults=FaultRates.none())
    aligned = Fleet(config, seed=2).advance(3)
    staggered = Fleet(replace(config, stagger=True), seed=2).advance(3)
    # Same motors, same physics: only the reported times move, motor i by i/n of the interval.
    assert staggered.asset_id == aligned.asset_id
    np.testing.assert_array_equal(staggered.values, aligned.values)
    motor = np.array([int(a[1:]) - 1 for a in staggered.asset_id])
    np.testing.assert_allclose(staggered.ts - aligned.ts, motor * 60.0 / config.motors)
    assert (np.diff(staggered.ts) > 0).all()  # delivered in sampling order


def test_a_paced_staggered_fleet_sends_each_reading_once_its_sampling_time_has_come() -> None:
    now = [100.0]
    config = replace(CONFIG, motors=100, interval_s=1.0, faults=FaultRates.none(), stagger=True)
    bus = InProcessBus()
    publisher = Publisher(
        Fleet(config, seed=2),
        bus.producer(),
        Pacing.parse("realtime"),
        end_ts=config.start_ts + 3,
        clock=lambda: now[0],
    )
    sent_at: list[tuple[float, int]] = []
    while not publisher.done:
        if sent := publisher.run_once():
            sent_at.append((now[0], sent))
        now[0] += max(publisher.seconds_until_due(), 0.001)
    readings, _ = decode_readings([r.value for r in _drain(bus, topics.READINGS)], load_profile("motor"))
    assert len(readings) == 3 * config.motors == sum(n for _, n in sent_at)
    # Sent in order, none before its sampling time, in sends at least SEND_INTERVAL_S apart.
    wall = np.concatenate([np.full(n, t) for t, n in sent_at])
    ts = np.sort(readings.ts)
    assert (wall - 100.0 >= ts - config.start_ts - 1e-9).all()
    assert (wall - 100.0 <= ts - config.start_ts + SEND_INTERVAL_S + 0.002).all()
    assert np.diff([t for t, _ in sent_at]).min() >= SEND_INTERVAL_S - 1e-9
    assert len(sent_at) >= 3 / SEND_INTERVAL_S * 0.9  # spread over the three seconds, not per tick


CLOSED_LOOP = replace(CONFIG, faults=FaultRates.none(), mean_onset_days=1e6)
PLANNED = CLOSED_LOOP.start_ts + 3600.0


def closed_loop() -> tuple[InProcessBus, Publisher, MaintenanceListener]:
    """A healthy fleet publishing at full speed, and its listener to ``maintenance.schedule``."""
    bus = InProcessBus()
    fleet = Fleet(CLOSED_LOOP, seed=2)
    publisher = Publisher(fleet, bus.producer(), Pacing.parse("max"))
    return bus, publisher, MaintenanceListener(fleet, bus, group_id=f"sim-{uuid.uuid4().hex}")


def job(job_id: str, asset: str, status: str = "planned") -> MaintenanceJob:
    """A job planned an hour into the fleet's clock."""
    return MaintenanceJob(
        job_id=job_id,
        asset_id=asset,
        planned_ts=PLANNED,
        deadline_ts=PLANNED + 86400,
        priority="high",
        risk=0.9,
        fits=True,
        model_version="v0001",
        status=status,
    )


def run_fleet(publisher: Publisher) -> None:
    for _ in range(10):
        publisher.run_once(max_ticks=30)


def performed(bus: InProcessBus) -> list[MaintenanceEvent]:
    events, _ = decode_many([r.value for r in _drain(bus, topics.MAINTENANCE)], MaintenanceEvent)
    return [m for _, m in events]


def test_closed_loop_performs_planned_jobs_once() -> None:
    bus, publisher, listener = closed_loop()
    producer = publisher.producer
    planned, foreign = job("j1", "m00003"), job("j2", "pump-7")
    producer.send_batch(
        topics.SCHEDULE, [(b"m00003", encode(planned)), (b"pump-7", encode(foreign)), (b"x", b"{oops")]
    )
    assert listener.run_once() == 3
    assert listener.foreign == 1 and listener.rejected == 1
    dead = _drain(bus, topics.dead_letter_topic(topics.SCHEDULE))
    assert len(dead) == 1
    run_fleet(publisher)
    producer.send_batch(topics.SCHEDULE, [(b"m00003", encode(planned))])  # re-published after it ran
    listener.run_once()
    run_fleet(publisher)
    assert [(m.asset_id, m.ts, m.action) for m in performed(bus)] == [
        ("m00003", PLANNED + CLOSED_LOOP.maintenance_hours * 3600, "preventive")
    ]
    listener.close()


def test_closed_loop_drops_a_cancelled_job_before_it_runs() -> None:
    bus, publisher, listener = closed_loop()

    def send(*jobs: MaintenanceJob) -> None:
        publisher.producer.send_batch(topics.SCHEDULE, [(j.asset_id.encode(), encode(j)) for j in jobs])
        listener.run_once()

    send(job("j1", "m00003"), job("j2", "m00004"))
    # j1's alert cleared; a cancellation of a job the asset no longer has changes nothing.
    send(job("j1", "m00003", "cancelled"), job("old", "m00004", "cancelled"))
    run_fleet(publisher)
    assert [m.asset_id for m in performed(bus)] == ["m00004"]
    listener.close()


def test_cli_publishes_to_the_bus_for_a_simulated_period(tmp_path) -> None:
    result = CliRunner().invoke(
        main,
        [
            "simulate",
            "--motors",
            "4",
            "--days",
            "0.1",
            "--interval",
            "60s",
            "--speed",
            "max",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    # Everything the same fleet delivers over 0.1 day (144 ticks), transit included, was published.
    fleet = Fleet(FleetConfig(motors=4, interval_s=60.0), seed=7)
    expected = len(fleet.advance(144)) + len(fleet.drain())
    assert f"\n{expected:,} readings in " in "\n" + result.output


@pytest.mark.kafka
def test_publishes_to_kafka(kafka_bootstrap) -> None:
    from ingest.kafka_bus import KafkaBus

    bus = KafkaBus(kafka_bootstrap)
    topic_suffix = uuid.uuid4().hex[:8]
    fleet = Fleet(replace(CONFIG, faults=FaultRates.none()), seed=2)
    producer = bus.producer()
    sent = encode_batch(fleet.advance(100))
    name = f"{topics.READINGS}.{topic_suffix}"
    bus.create_topics([name], 3)
    producer.send_batch(name, sent)
    producer.flush()
    consumer = bus.consumer([name], f"g-{topic_suffix}")
    got = []
    for _ in range(100):
        got.extend(consumer.poll_batch(10_000, timeout_s=0.5))
        if len(got) >= len(sent):
            break
    assert sorted(r.value for r in got) == sorted(v for _, v in sent)
    assert {r.key for r in got} == {a.encode() for a in fleet.asset_ids}
    consumer.close()
    producer.close()
    bus.close()
