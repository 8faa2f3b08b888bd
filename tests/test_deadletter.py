"""The dead-letter helper: destination, key, payload, metric, and that every input is accounted for."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from ingest import topics
from ingest.bus import Record
from ingest.deadletter import dead_letter
from ingest.inproc import InProcessBus
from ingest.profiles import load_profile
from ingest.schemas import DeadLetter, Reading, Reason, decode_many, decode_readings, encode

MOTOR = load_profile("motor")


def counted(stage: str, reason: Reason) -> float:
    labels = {"stage": stage, "reason": reason.value}
    return REGISTRY.get_sample_value("motorwatch_dead_letters_total", labels) or 0.0


def records(topic: str, values: list[bytes]) -> list[Record]:
    return [Record(topic, 2, 100 + i, b"m%d" % i, v, 0) for i, v in enumerate(values)]


def letters(bus: InProcessBus, topic: str) -> list[tuple[Record, DeadLetter]]:
    consumer = bus.consumer([topic], "ops")
    got = consumer.poll_batch(max_records=10_000, timeout_s=0)
    decoded, rejected = decode_many([r.value for r in got], DeadLetter)
    assert rejected == []
    return [(r, m) for r, (_, m) in zip(got, decoded, strict=True)]


def test_rejections_become_counted_dead_letters_keyed_like_the_original() -> None:
    bus = InProcessBus()
    good = encode(Reading(asset_id="m1", ts=1.0, values={"vibration_mm_s": 2.0}))
    polled = records(topics.FEATURES, [good, b"\xff\xfe", b"[1,2]", good])
    before = counted("scorer", Reason.NOT_JSON), counted("scorer", Reason.INVALID_TYPE)
    _, rejections = decode_readings([r.value for r in polled], MOTOR)

    assert dead_letter(bus.producer(), polled, rejections, stage="scorer") == 2

    after = counted("scorer", Reason.NOT_JSON), counted("scorer", Reason.INVALID_TYPE)
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)
    got = letters(bus, "sensor.features.dlq")
    assert sorted((r.key, m.reason, m.raw, m.topic, m.partition, m.offset) for r, m in got) == [
        (b"m1", Reason.NOT_JSON, b"\xff\xfe", topics.FEATURES, 2, 101),
        (b"m2", Reason.INVALID_TYPE, b"[1,2]", topics.FEATURES, 2, 102),
    ]


def test_replay_sends_to_the_readings_dead_letter_topic_when_told() -> None:
    bus = InProcessBus()
    polled = [Record("plant.csv", 0, 7, b"m9", b"nope", 0)]
    _, rejections = decode_readings([polled[0].value], MOTOR)
    dead_letter(bus.producer(), polled, rejections, stage="replay", topic=topics.READINGS_DLQ)
    [(_, letter)] = letters(bus, topics.READINGS_DLQ)
    assert (letter.topic, letter.offset, letter.reason) == ("plant.csv", 7, Reason.NOT_JSON)


def test_nothing_to_dead_letter_sends_nothing() -> None:
    bus = InProcessBus()
    assert dead_letter(bus.producer(), records(topics.READINGS, []), [], stage="features") == 0
    assert bus.end_offsets(topics.READINGS_DLQ) == [0] * bus.partitions(topics.READINGS_DLQ)


def test_stage_label_is_bounded() -> None:
    with pytest.raises(ValueError, match="unknown stage"):
        dead_letter(InProcessBus().producer(), [], [], stage="asset-m00042")


reading_like = st.fixed_dictionaries(
    {"v": st.sampled_from([1, 1, 1, 2]), "asset_id": st.text(max_size=5), "ts": st.floats()},
    optional={"values": st.dictionaries(st.sampled_from([*MOTOR.signal_names, "rpm"]), st.floats())},
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=30), reading_like.map(lambda d: encode(d))), max_size=25))
def test_every_reading_is_processed_or_dead_lettered(values: list[bytes]) -> None:
    bus = InProcessBus()
    polled = records(topics.READINGS, values)
    batch, rejections = decode_readings(values, MOTOR)
    dead_letter(bus.producer(), polled, rejections, stage="features")
    dead = letters(bus, topics.READINGS_DLQ)
    kept = {int(i) for i in batch.index}
    lettered = {m.offset - 100 for _, m in dead}
    assert len(dead) == len(lettered) and not kept & lettered
    assert kept | lettered == set(range(len(values)))
    assert all(m.raw == values[m.offset - 100] for _, m in dead)
    assert all(math.isfinite(t) for t in batch.ts)
