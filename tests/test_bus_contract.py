"""The bus contract: the same assertions against the in-process bus and a real Kafka broker.

Every test uses fresh topic and group names (or, for the dead-letter topic, fresh keys), so runs on
a shared broker do not see each other's data.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator

import pytest

from ingest import topics
from ingest.bus import Bus, Consumer, Record, partition_for
from ingest.deadletter import dead_letter
from ingest.profiles import load_profile
from ingest.schemas import DeadLetter, Reading, Reason, decode_many, decode_readings, encode

PARTITIONS = 3
# Kafka: joining a group and rebalancing take seconds; the in-process bus answers at once.
DEADLINE_S = 60.0


@pytest.fixture(params=["inproc", pytest.param("kafka", marks=pytest.mark.kafka)])
def bus(request: pytest.FixtureRequest) -> Iterator[Bus]:
    if request.param == "inproc":
        from ingest.inproc import InProcessBus

        b: Bus = InProcessBus()
    else:
        from ingest.kafka_bus import KafkaBus

        b = KafkaBus(request.getfixturevalue("kafka_bootstrap"))
    yield b
    b.close()


def fresh(name: str) -> str:
    return f"test.{name}.{uuid.uuid4().hex[:10]}"


def drain(consumer: Consumer, want: int, *, where: Callable[[Record], bool] = lambda r: True) -> list[Record]:
    """Poll until ``want`` matching records arrived, then poll briefly for any extra (a bug)."""
    out: list[Record] = []
    deadline = time.monotonic() + DEADLINE_S
    while len(out) < want:
        assert time.monotonic() < deadline, f"only {len(out)} of {want} records within {DEADLINE_S} s"
        out += [r for r in consumer.poll_batch(max_records=500, timeout_s=0.2) if where(r)]
    out += [r for r in consumer.poll_batch(max_records=500, timeout_s=0.3) if where(r)]
    return out


def wait_until(condition: Callable[[], bool], *pollers: Consumer) -> None:
    """Poll every consumer (rebalances land in polls) until ``condition`` holds."""
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        for c in pollers:
            assert c.poll_batch(max_records=1, timeout_s=0.1) == [], "no data was produced yet"


def keyed(keys: int, per_key: int) -> list[tuple[bytes, bytes]]:
    """``per_key`` messages for each of ``keys`` keys, interleaved; value = b"key:seq"."""
    return [(b"a%03d" % k, b"a%03d:%d" % (k, s)) for s in range(per_key) for k in range(keys)]


def seqs(records: list[Record]) -> dict[bytes, list[int]]:
    out: dict[bytes, list[int]] = defaultdict(list)
    for r in records:
        out[r.key].append(int(r.value.split(b":")[1]))
    return out


def test_end_offsets_count_what_each_partition_received(bus: Bus) -> None:
    topic = fresh("ends")
    bus.create_topics([topic], PARTITIONS)
    assert bus.end_offsets(topic) == [0] * PARTITIONS
    producer = bus.producer()
    producer.send_batch(topic, keyed(keys=20, per_key=3))
    producer.flush()
    expected = [0] * PARTITIONS
    for k in range(20):
        expected[partition_for(b"a%03d" % k, PARTITIONS)] += 3
    assert bus.end_offsets(topic) == expected
    producer.close()


def test_per_key_order_and_placement_across_batches(bus: Bus) -> None:
    topic = fresh("order")
    bus.create_topics([topic], PARTITIONS)
    sent = keyed(keys=40, per_key=25)
    producer = bus.producer()
    for i in range(0, len(sent), 130):  # batches that cut across keys
        producer.send_batch(topic, sent[i : i + 130])
    producer.flush(timeout_s=30)
    consumer = bus.consumer([topic], fresh("g"))
    got = drain(consumer, len(sent))
    consumer.close()
    producer.close()

    assert len(got) == len(sent)
    assert all(s == list(range(25)) for s in seqs(got).values()) and len(seqs(got)) == 40
    assert all(r.partition == partition_for(r.key, PARTITIONS) for r in got), "placement is murmur2(key)"
    for p in range(PARTITIONS):
        offsets = [r.offset for r in got if r.partition == p]
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)


def test_group_of_two_splits_partitions_without_overlap(bus: Bus) -> None:
    topic, group = fresh("split"), fresh("g")
    everything = {(topic, p) for p in range(PARTITIONS)}
    bus.create_topics([topic], PARTITIONS)
    one = bus.consumer([topic], group)
    wait_until(lambda: one.assignment() == everything, one)
    two = bus.consumer([topic], group)
    wait_until(
        lambda: (
            bool(one.assignment())
            and bool(two.assignment())
            and one.assignment() | two.assignment() == everything
            and not one.assignment() & two.assignment()
        ),
        one,
        two,
    )
    sent = keyed(keys=30, per_key=10)
    producer = bus.producer()
    producer.send_batch(topic, sent)
    producer.flush(timeout_s=30)

    got: dict[str, list[Record]] = {"one": [], "two": []}
    deadline = time.monotonic() + DEADLINE_S
    while sum(map(len, got.values())) < len(sent):
        assert time.monotonic() < deadline
        got["one"] += one.poll_batch(max_records=100, timeout_s=0.1)
        got["two"] += two.poll_batch(max_records=100, timeout_s=0.1)
    assert {(r.topic, r.partition) for r in got["one"]} <= one.assignment()
    assert {(r.topic, r.partition) for r in got["two"]} <= two.assignment()
    assert got["one"] and got["two"], "both members receive data"
    everyone = got["one"] + got["two"]
    assert sorted(r.value for r in everyone) == sorted(v for _, v in sent), "each message exactly once"
    one.close()
    two.close()
    producer.close()


def test_commit_then_restart_resumes_after_last_commit(bus: Bus) -> None:
    topic, group = fresh("resume"), fresh("g")
    bus.create_topics([topic], PARTITIONS)
    sent = keyed(keys=12, per_key=50)  # 600
    producer = bus.producer()
    producer.send_batch(topic, sent)
    producer.flush(timeout_s=30)

    first = bus.consumer([topic], group)
    committed = drain_exactly(first, 240)
    first.commit()
    uncommitted = drain_exactly(first, 120)  # returned, never committed: must come back
    first.close()

    second = bus.consumer([topic], group)
    rest = drain(second, len(sent) - len(committed))
    assert len(rest) == len(sent) - len(committed), "nothing lost, nothing committed comes back"
    assert {r.value for r in rest} == {v for _, v in sent} - {r.value for r in committed}
    assert {r.value for r in uncommitted} <= {r.value for r in rest}
    second.commit()
    second.close()

    producer.send_batch(topic, [(b"a000", b"a000:new")])
    producer.flush(timeout_s=30)
    third = bus.consumer([topic], group)
    assert [r.value for r in drain(third, 1)] == [b"a000:new"], "everything before it was committed"
    third.close()
    producer.close()


def drain_exactly(consumer: Consumer, n: int) -> list[Record]:
    """Exactly ``n`` records (polls ask for no more than still needed)."""
    out: list[Record] = []
    deadline = time.monotonic() + DEADLINE_S
    while len(out) < n:
        assert time.monotonic() < deadline
        out += consumer.poll_batch(max_records=min(100, n - len(out)), timeout_s=0.2)
    assert len(out) == n
    return out


def test_rebalance_callbacks_fire_on_join_and_leave(bus: Bus) -> None:
    topic, group = fresh("callbacks"), fresh("g")
    everything = {(topic, p) for p in range(PARTITIONS)}
    bus.create_topics([topic], PARTITIONS)
    events: list[tuple[str, str, set]] = []

    def member(name: str) -> Consumer:
        return bus.consumer(
            [topic],
            group,
            on_assign=lambda tps: events.append((name, "assign", set(tps))),
            on_revoke=lambda tps: events.append((name, "revoke", set(tps))),
        )

    def last(name: str, kind: str) -> set | None:
        return next((tps for n, k, tps in reversed(events) if n == name and k == kind), None)

    one = member("one")
    wait_until(lambda: last("one", "assign") == everything, one)
    two = member("two")
    wait_until(
        lambda: (
            (last("two", "assign") or set()) | (last("one", "assign") or set()) == everything
            and bool(last("two", "assign"))
            and not last("one", "assign") & last("two", "assign")
        ),
        one,
        two,
    )
    assert last("one", "revoke") == everything, "the first member gave its partitions back"
    assert last("one", "assign") == one.assignment() and last("two", "assign") == two.assignment()
    two.close()
    wait_until(lambda: last("one", "assign") == everything, one)
    one.close()


def test_bad_messages_go_to_the_dead_letter_topic(bus: Bus) -> None:
    profile = load_profile("motor")
    run = uuid.uuid4().hex[:8]  # the real topic names; this run's keys tell its messages apart
    bus.create_topics([topics.READINGS, topics.READINGS_DLQ], PARTITIONS)
    assets = [f"{run}-m{i}" for i in range(6)]
    good = [(a.encode(), encode(Reading(asset_id=a, ts=1.0, values={"current_a": 10.0}))) for a in assets]
    bad = {
        f"{run}-not-json".encode(): (b"{not json", Reason.NOT_JSON),
        f"{run}-hot".encode(): (
            encode(Reading(asset_id=f"{run}-hot", ts=1.0, values={"temperature_c": 9999.0})),
            Reason.OUT_OF_RANGE,
        ),
        f"{run}-v2".encode(): (b'{"v":2,"asset_id":"x","ts":1.0,"values":{}}', Reason.WRONG_VERSION),
    }
    producer = bus.producer()
    producer.send_batch(topics.READINGS, good[:3] + [(k, raw) for k, (raw, _) in bad.items()] + good[3:])
    producer.flush(timeout_s=30)

    def mine(r: Record) -> bool:
        return r.key is not None and r.key.startswith(run.encode())

    worker = bus.consumer([topics.READINGS], fresh("features"))
    records = drain(worker, len(good) + len(bad), where=mine)
    batch, rejections = decode_readings([r.value for r in records], profile)
    assert dead_letter(producer, records, rejections, stage="features") == len(bad)
    producer.flush(timeout_s=30)
    worker.commit()
    worker.close()
    assert sorted(batch.asset_id) == sorted(k.decode() for k, _ in good)

    operator = bus.consumer([topics.READINGS_DLQ], fresh("ops"))
    letters = drain(operator, len(bad), where=mine)
    operator.close()
    assert len(letters) == len(bad)
    decoded, rejected = decode_many([r.value for r in letters], DeadLetter)
    assert rejected == []
    by_key = {r.key: m for r, (_, m) in zip(letters, decoded, strict=True)}
    source = {r.key: r for r in records}
    for key, (raw, reason) in bad.items():
        letter = by_key[key]
        assert (letter.reason, letter.raw, letter.topic) == (reason, raw, topics.READINGS)
        assert (letter.partition, letter.offset) == (source[key].partition, source[key].offset)
        assert letter.detail
    producer.close()
