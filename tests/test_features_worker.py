"""The feature worker on a bus: dead letters, stale markers, recovery after a crash (in-process, Kafka)."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from dataclasses import replace
from pathlib import Path

import msgspec
import numpy as np
import pandas as pd
import pytest
from prometheus_client import REGISTRY
from test_features_engines import assert_same, make_log

from features.batch import compute_features
from features.spec import FeatureSpec
from features.worker import FeatureWorker, WorkerConfig
from ingest.bus import Bus, partition_for
from ingest.inproc import InProcessBus
from ingest.profiles import load_profile
from ingest.schemas import (
    DeadLetter,
    Features,
    Reading,
    ReadingBatch,
    Reason,
    encode,
    encode_readings_columnar,
    reading_rows,
)

MOTOR = load_profile("motor")
SPEC = FeatureSpec.from_profile(MOTOR)


class Crash(Exception):
    """The worker process dies here."""


def topic_config(tag: str, **kwargs) -> WorkerConfig:
    """A worker of its own group and topics (``kwargs`` override the topics, e.g. to share the input)."""
    topics = {
        "readings_topic": f"readings-{tag}",
        "maintenance_topic": f"maintenance-{tag}",
        "features_topic": f"features-{tag}",
    }
    return WorkerConfig(group_id=f"features-{tag}", **(topics | kwargs))


def publish(bus: Bus, topic: str, log: pd.DataFrame, extra: list[bytes] = ()) -> None:
    messages = []
    for row in log.itertuples(index=False):
        values = {s: getattr(row, s) for s in MOTOR.signal_names if not np.isnan(getattr(row, s))}
        messages.append(
            (row.asset_id.encode(), encode(Reading(asset_id=row.asset_id, ts=row.ts, values=values)))
        )
    for i, raw in enumerate(extra):
        messages.insert(7 * i + 3, (b"m00000", raw))
    producer = bus.producer()
    producer.send_batch(topic, messages)
    producer.flush()


def drain(bus: Bus, topic: str, cls: type) -> list:
    consumer = bus.consumer([topic], f"check-{uuid.uuid4().hex}")
    out, idle = [], 0
    while idle < 3:
        batch = consumer.poll_batch(10_000, 0.5)
        idle = 0 if batch else idle + 1
        out += [msgspec.json.decode(r.value, type=cls) for r in batch]
    consumer.close()
    return out


def run_dry(worker: FeatureWorker) -> int:
    """Run until the input is consumed (a few empty polls in a row); returns the batches processed."""
    idle = batches = 0
    while idle < 3:
        got = worker.run_once(300, 0.2)
        idle, batches = (0, batches + 1) if got else (idle + 1, batches)
    return batches


OUTCOMES = ("processed", "late", "duplicate", "invalid")


def metric_samples() -> dict[tuple[str, tuple], float]:
    """Every sample of the feature worker's counters and histograms, by (name, sorted labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for metric in REGISTRY.collect()
        if metric.name.startswith(("motorwatch_features", "motorwatch_dead_letters"))
        for s in metric.samples
    }


def frame(messages: list[Features]) -> pd.DataFrame:
    rows = [{"asset_id": m.asset_id, "ts": m.ts, **m.features} for m in messages if not m.stale]
    return pd.DataFrame(rows, columns=["asset_id", "ts", *SPEC.names])


def test_worker_dead_letters_bad_and_late_readings_and_emits_the_batch_features() -> None:
    bus = InProcessBus(partitions=3)
    config = topic_config("dlq")
    log = make_log(n_assets=3, n=300, seed=11)
    bad = [
        b"not json",
        b'{"v":1,"asset_id":"m00000","ts":1.0,"values":{"oil_c":1.0}}',
        b'{"v":1,"asset_id":"m00000","ts":1.0,"values":{"current_a":-5.0}}',
    ]
    publish(bus, config.readings_topic, log, extra=bad)
    before = metric_samples()
    worker = FeatureWorker(bus, MOTOR, config)
    batches = run_dry(worker)
    worker.close()
    counted = {k: v - before.get(k, 0.0) for k, v in metric_samples().items()}
    letters = drain(bus, config.readings_topic + ".dlq", DeadLetter)
    reasons = Counter(d.reason for d in letters)
    assert (
        reasons[Reason.NOT_JSON] == 1
        and reasons[Reason.UNKNOWN_SIGNAL] == 1
        and reasons[Reason.OUT_OF_RANGE] == 1
    )
    assert reasons[Reason.LATE] > 0
    assert {d.raw for d in letters} >= set(bad)
    got = frame(drain(bus, config.features_topic, Features))
    expected = compute_features(log, SPEC)
    # Emitted: the batch features, except each asset's readings still inside the grace period.
    newest = log.groupby("asset_id")["ts"].max()
    expected = expected[expected["ts"] <= expected["asset_id"].map(newest) - SPEC.grace]
    assert_same(got, expected)
    # Every reading is accounted for: a feature vector, a dead letter, a duplicate, or still waiting.
    unique = log.drop_duplicates(["asset_id", "ts"])
    waiting = int((unique["ts"] > unique["asset_id"].map(newest) - SPEC.grace).sum())
    assert len(got) + len(letters) + worker.engine.duplicates + waiting == len(log) + len(bad)
    # The metrics tell the same story.
    outcome = {o: counted[("motorwatch_features_readings_total", (("outcome", o),))] for o in OUTCOMES}
    assert outcome["late"] == reasons[Reason.LATE] and outcome["duplicate"] == worker.engine.duplicates
    assert outcome["invalid"] == len(bad) and sum(outcome.values()) == len(log) + len(bad)
    for reason, n in reasons.items():
        assert (
            counted[("motorwatch_dead_letters_total", (("reason", reason.value), ("stage", "features")))] == n
        )
    assert counted[("motorwatch_features_emitted_total", (("kind", "vector"),))] == len(got)
    assert counted[("motorwatch_features_batch_seconds_count", ())] == batches
    assert counted[("motorwatch_features_batch_seconds_sum", ())] > 0
    assert REGISTRY.get_sample_value("motorwatch_features_assets_tracked") == worker.engine.assets == 3
    assert REGISTRY.get_sample_value("motorwatch_features_state_bytes") == worker.engine.state_bytes() > 0


def test_readings_handed_over_in_one_process_give_what_their_json_gives() -> None:
    """A replay in the worker's process hands over ReadingRow values instead of JSON: the features,
    and the dead letters with their raw messages, must be those of the same readings as JSON: late,
    out-of-range, missing and infinite values (which JSON writes as null) included."""
    log = make_log(n_assets=3, n=300, seed=11)
    signals = list(MOTOR.signal_names)
    values = log[signals].to_numpy(float, copy=True)
    batch = ReadingBatch(
        MOTOR.signal_names, log["asset_id"].tolist(), log["ts"].to_numpy(float), values, np.arange(len(log))
    )
    batch.values[5, signals.index("current_a")] = -5.0  # out of range
    batch.values[11, 1] = np.nan  # a signal the reading lacks
    batch.values[650, 0] = np.inf  # in a later poll: that one decodes its JSON

    def run(messages: list) -> tuple[list, list]:
        bus = InProcessBus(partitions=3)
        config = topic_config("rows")
        bus.producer().send_batch(config.readings_topic, messages)
        worker = FeatureWorker(bus, MOTOR, config)
        run_dry(worker)
        worker.close()
        letters = drain(bus, config.readings_topic + ".dlq", DeadLetter)
        return drain(bus, config.features_topic, Features), sorted(
            (d.partition, d.offset, d.reason, d.detail, d.raw) for d in letters
        )

    features, letters = run(reading_rows(batch))
    assert (features, letters) == run(encode_readings_columnar(batch))
    reasons = Counter(reason for _, _, reason, _, _ in letters)
    assert reasons[Reason.OUT_OF_RANGE] == 1 and reasons[Reason.NON_FINITE] == 1 and reasons[Reason.LATE] > 0
    assert len(features) > 0


def steady(t: np.ndarray) -> pd.DataFrame:
    """Asset 'a' reading the same healthy values at times ``t``."""
    values = {"temperature_c": 50.0, "vibration_mm_s": 2.0, "current_a": 30.0, "runtime_h": 1.0}
    return pd.DataFrame({"asset_id": "a", "ts": t, **values})


def test_a_silent_asset_gets_one_stale_marker_from_its_partitions_watermark() -> None:
    bus = InProcessBus(partitions=1)
    config = topic_config("stale")
    log = steady(np.arange(0.0, SPEC.stale_after + 400.0, 5.0))  # 'a' goes on well past b's stale time
    silent = log[log["ts"] < 100].assign(asset_id="b")
    publish(bus, config.readings_topic, pd.concat([log, silent]).sort_values("ts", kind="stable"))
    worker = FeatureWorker(bus, MOTOR, config)
    while worker.run_once(10, 0.2):  # batches of 10 readings: the watermark moves 50 s at a time
        pass
    stale = [m for m in drain(bus, config.features_topic, Features) if m.stale]
    assert [(m.asset_id, m.features) for m in stale] == [("b", {})]
    assert 95.0 + SPEC.stale_after < stale[0].ts <= 95.0 + SPEC.stale_after + 50


def test_stale_markers_fall_where_they_would_with_readings_taken_one_at_a_time() -> None:
    """'b' falls silent and comes back, 'c' falls silent for good, 'a' reads on: whatever the batch
    size, each asset's messages (vectors and markers, in order) are those of batches of one."""
    a = steady(np.arange(0.0, SPEC.stale_after + 900.0, 5.0))
    b = a[(a["ts"] < 100) | (a["ts"] >= 100 + SPEC.stale_after + 300)].assign(asset_id="b")
    c = a[a["ts"] < 200].assign(asset_id="c")
    log = pd.concat([a, b, c]).sort_values("ts", kind="stable")
    runs = {}
    for size in (1, 7, 10_000):
        bus = InProcessBus(partitions=1)
        config = topic_config(f"silences-{size}")
        publish(bus, config.readings_topic, log)
        worker = FeatureWorker(bus, MOTOR, config)
        while worker.run_once(size, 0.0):
            pass
        by_asset: dict[str, list] = {}
        for m in drain(bus, config.features_topic, Features):
            by_asset.setdefault(m.asset_id, []).append((m.ts, m.stale))
        runs[size] = by_asset
    assert runs[7] == runs[1] and runs[10_000] == runs[1]
    markers = {aid: [ts for ts, stale in msgs if stale] for aid, msgs in runs[1].items()}
    assert markers == {"a": [], "b": [100.0 + SPEC.stale_after], "c": [200.0 + SPEC.stale_after]}
    # b's last readings before its silence wait out the grace period until it reads again: their
    # vectors come after the marker, then those of its return.
    b_msgs = runs[1]["b"]
    marker = b_msgs.index((100.0 + SPEC.stale_after, True))
    after = [ts for ts, _ in b_msgs[marker + 1 :]]
    held = [ts for ts in after if ts < 100]
    assert held == list(np.arange(100 - SPEC.grace, 100, 5.0)) and after == sorted(after)


def test_stale_markers_stay_right_when_a_rebalance_renumbers_the_assets_kept() -> None:
    """The worker keeps each partition's assets between batches; a revoked partition's assets leave
    the engine, which renumbers the rest: the silent asset of the partition kept gets its one marker."""
    bus = InProcessBus(partitions=2)
    config = topic_config("renumbered")
    named = lambda p: sorted(n for n in (f"x{i}" for i in range(200)) if partition_for(n.encode(), 2) == p)  # noqa: E731
    kept, others = named(0)[:2], named(1)[:20]  # the first worker keeps partition 0 (range assignment)
    a = steady(np.arange(0.0, SPEC.stale_after + 900.0, 5.0))
    worker = FeatureWorker(bus, MOTOR, config)
    # The others come first, so they take the lowest slots; the kept ones then come in two batches.
    for ids, start, end in ((others, 0, 100), (kept, 0, 50), (kept, 50, 100)):
        log = a[(a["ts"] >= start) & (a["ts"] < end)]
        publish(bus, config.readings_topic, pd.concat([log.assign(asset_id=x) for x in ids]))
        run_dry(worker)
    FeatureWorker(bus, MOTOR, config)  # joins the group: partition 1 moves to it
    later = [
        a[a["ts"] >= 100].assign(asset_id=kept[0]),
        a[(a["ts"] >= 100) & (a["ts"] < 200)].assign(asset_id=kept[1]),
    ]
    publish(bus, config.readings_topic, pd.concat(later).sort_values("ts", kind="stable"))
    run_dry(worker)
    assert worker.engine.asset_ids == kept  # the others left, and the kept ones were renumbered
    stale = [(m.asset_id, m.ts) for m in drain(bus, config.features_topic, Features) if m.stale]
    assert stale == [(kept[1], 200.0 + SPEC.stale_after)]


def crash_and_restart(bus: Bus, state_dir: Path, tag: str, crash: str) -> list[Features]:
    """Run a worker, kill it at ``crash`` during a checkpoint mid-stream, start a new one on the same
    group and state dir, let it finish. Returns everything produced to the features topic.
    ``crash="rebalance"``: nobody dies; a second worker joins mid-stream and takes a partition over."""
    config = topic_config(tag, state_dir=state_dir, checkpoint_interval_s=0.0)
    first = FeatureWorker(bus, MOTOR, config)
    for _ in range(4):
        first.run_once(300, 1.0)
    if crash == "rebalance":
        first.config = replace(config, checkpoint_interval_s=3600.0)
        first.run_once(300, 1.0)  # past its last snapshot: the partition's new owner redoes this
        second = FeatureWorker(bus, MOTOR, config)
        idle, deadline = 0, time.monotonic() + 60
        while (idle < 3 or not second.consumer.assignment()) and time.monotonic() < deadline:
            idle = 0 if first.run_once(300, 0.2) + second.run_once(300, 0.2) else idle + 1
        # Each holds the assets of its own partition only (the first dropped those it lost).
        assert first.engine.assets and second.engine.assets
        assert not set(first.engine.asset_ids) & set(second.engine.asset_ids)
        first.close()
        second.close()
        return drain(bus, config.features_topic, Features)

    def die(*_args) -> None:
        raise Crash

    if crash == "before_snapshot":  # outputs flushed, state and offsets not saved
        first._write_snapshot = die
    elif crash == "before_commit":  # snapshot written, offsets not committed
        first.consumer.commit = die
    else:  # a batch made since the last checkpoint, then the broker refuses one; run() then closes
        first.config = replace(config, checkpoint_interval_s=3600.0)
        first.run_once(300, 1.0)
        first.producer.send_batch = lambda *args, **kwargs: None
        first.producer.flush = die
    with pytest.raises(Crash):
        if crash == "produce_fails":
            first.run(threading.Event())
        for _ in range(50):
            first.run_once(300, 1.0)
    if crash == "produce_fails":
        with pytest.raises(RuntimeError, match="restart"):
            first.run_once(300, 1.0)  # a worker that lost outputs does not carry on past them
    first.consumer.close()  # the broker evicts the dead member; nothing of it is committed
    second = FeatureWorker(bus, MOTOR, config)
    run_dry(second)
    second.close()
    return drain(bus, config.features_topic, Features)


def check_recovery(bus: Bus, tmp_path: Path, crash: str) -> None:
    tag = uuid.uuid4().hex[:10]
    log = make_log(n_assets=4, n=500, seed=13)
    config = topic_config(tag)
    bus.create_topics(
        [
            config.readings_topic,
            config.maintenance_topic,
            config.features_topic,
            config.readings_topic + ".dlq",
            f"features-{tag}-clean",
        ],
        2,
    )
    publish(bus, config.readings_topic, log)
    # The uninterrupted worker's group joins first: the in-process bus, like Kafka retention, drops
    # what every known group has committed, so a group formed later would find nothing.
    clean = FeatureWorker(
        bus,
        MOTOR,
        topic_config(
            tag + "-clean", readings_topic=config.readings_topic, maintenance_topic=config.maintenance_topic
        ),
    )
    produced = crash_and_restart(bus, tmp_path / "state", tag, crash)
    got = frame(produced)
    # At-least-once: a vector may come twice, but always with the same values.
    repeats = got[got.duplicated(["asset_id", "ts"], keep=False)]
    for _, same in repeats.groupby(["asset_id", "ts"]):
        np.testing.assert_array_equal(same.iloc[0, 2:].to_numpy(float), same.iloc[-1, 2:].to_numpy(float))
    got = got.drop_duplicates(["asset_id", "ts"])
    # Equal to an uninterrupted run of the same stream.
    run_dry(clean)
    clean.close()
    assert_same(got, frame(drain(bus, clean.config.features_topic, Features)), rtol=1e-12)
    assert len(got) > 0.8 * len(log)


@pytest.mark.parametrize("crash", ["before_snapshot", "before_commit", "produce_fails", "rebalance"])
def test_killed_and_restarted_worker_emits_what_an_uninterrupted_one_does(tmp_path: Path, crash: str) -> None:
    bus = InProcessBus(partitions=2)
    check_recovery(bus, tmp_path, crash)


@pytest.mark.kafka
@pytest.mark.parametrize("crash", ["before_snapshot", "before_commit", "produce_fails", "rebalance"])
def test_killed_and_restarted_worker_on_kafka(kafka_bootstrap: str, tmp_path: Path, crash: str) -> None:
    from ingest.kafka_bus import KafkaBus

    bus = KafkaBus(kafka_bootstrap)
    try:
        check_recovery(bus, tmp_path, crash)
    finally:
        bus.close()
