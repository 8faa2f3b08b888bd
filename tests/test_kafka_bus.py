"""Kafka-specific behaviour of :class:`ingest.kafka_bus.KafkaBus` (the shared behaviour of both
buses is in test_bus_contract.py): errors when the broker is unreachable, topic creation,
placement by key, and the fast record-batch decoder against kafka-python's own."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kafka.future import Future as KafkaFuture
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.structs import MemberState
from prometheus_client import REGISTRY

from ingest.bus import BusError, Record, partition_for
from ingest.kafka_bus import KafkaBus
from ingest.kafka_records import decode_records

RECOVERIES = "motorwatch_kafka_consumer_recoveries_total"


def fresh(name: str) -> str:
    return f"test.kafka.{name}.{uuid.uuid4().hex[:10]}"


@pytest.fixture
def bus(kafka_bootstrap: str) -> Iterator[KafkaBus]:
    b = KafkaBus(kafka_bootstrap, timeout_s=2.0)
    yield b
    b.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once closed


@pytest.mark.timeout(20)  # "no endless silent retry": a hang fails the test
def test_an_unreachable_broker_raises_bus_error_quickly() -> None:
    with pytest.raises(BusError, match=r"unreachable"):
        KafkaBus(f"127.0.0.1:{closed_port()}", timeout_s=2.0)


@pytest.mark.kafka
@pytest.mark.timeout(30)
def test_producing_to_a_topic_that_was_never_created_raises_bus_error(bus: KafkaBus) -> None:
    producer = bus.producer()
    with pytest.raises(BusError, match="create_topics"):
        producer.send_batch(fresh("missing"), [(b"m1", b"{}")])
    producer.close()


@pytest.mark.kafka
def test_create_topics_gives_the_partition_count_and_leaves_existing_topics_alone(bus: KafkaBus) -> None:
    four, seven = fresh("four"), fresh("seven")
    bus.create_topics([four, seven], 4)
    bus.create_topics([seven], 7)  # exists already: no error, no change
    bus.create_topics([four, seven], 4)
    assert (bus.partitions(four), bus.partitions(seven)) == (4, 4)


@pytest.mark.kafka
def test_delete_topics_removes_them_and_skips_absent_ones(bus: KafkaBus) -> None:
    gone, kept, never = fresh("gone"), fresh("kept"), fresh("never")
    bus.create_topics([gone, kept], 2)
    bus.delete_topics([gone, never])
    deadline = time.monotonic() + 10  # the broker's metadata follows its controller's decision
    while bus.end_offsets(gone) and time.monotonic() < deadline:
        time.sleep(0.1)
    with pytest.raises(BusError, match="does not exist"):
        bus.partitions(gone)
    assert bus.partitions(kept) == 2


@pytest.mark.kafka
def test_round_trip_places_each_key_on_partition_for_and_keeps_its_order(bus: KafkaBus) -> None:
    topic, partitions = fresh("placement"), 5
    bus.create_topics([topic], partitions)
    # ~4 MB in 3 send_batch calls: several record batches per partition (1 MiB each before lz4)
    sent = [(b"m%05d" % (i % 97), b"%07d:" % i + b"x" * 300) for i in range(12_000)]
    producer = bus.producer()
    before_ms = int(time.time() * 1000)
    for start in range(0, len(sent), 4_000):
        producer.send_batch(topic, sent[start : start + 4_000])
    producer.flush()
    consumer = bus.consumer([topic], fresh("group"))
    got: list[Record] = []
    deadline = time.monotonic() + 60
    while len(got) < len(sent) and time.monotonic() < deadline:
        got += consumer.poll_batch(max_records=5_000, timeout_s=0.5)
    consumer.close()
    producer.close()

    assert sorted((r.key, r.value) for r in got) == sorted(sent), "each message exactly once, bytes intact"
    assert all(r.partition == partition_for(r.key, partitions) for r in got)
    for key in {k for k, _ in sent}:
        mine = [r for r in got if r.key == key]
        assert [r.value for r in mine] == [v for k, v in sent if k == key], "per-key order"
        assert [r.offset for r in mine] == sorted(r.offset for r in mine)
    assert all(r.topic == topic and before_ms - 1000 <= r.timestamp_ms <= time.time() * 1000 for r in got)


def recoveries() -> dict[str, float]:
    """``motorwatch_kafka_consumer_recoveries_total`` by ``how``, as exposed."""
    return {
        how: REGISTRY.get_sample_value(RECOVERIES, {"how": how}) or 0.0 for how in ("rejoin", "new_client")
    }


def since(before: dict[str, float]) -> dict[str, float]:
    return {how: n - before[how] for how, n in recoveries().items()}


def through_a_fault(bus: KafkaBus, inject: Callable[[Any], None], rejoin_bound_s: float) -> dict[str, float]:
    """A consumer reads and commits 1,000 messages, ``inject`` breaks its kafka-python client, 1,000
    more are produced: the consumer must read each of them once within 60 s. Returns the recoveries
    counted meanwhile, by ``how``."""
    before = recoveries()
    topic = fresh("fault")
    bus.create_topics([topic], 2)
    producer = bus.producer()
    first = [(b"m%03d" % (i % 50), b"first %05d" % i) for i in range(1_000)]
    second = [(b"m%03d" % (i % 50), b"second %05d" % i) for i in range(1_000)]
    consumer = bus.consumer([topic], fresh("group"), rejoin_bound_s=rejoin_bound_s)

    def poll_until(count: int) -> list[Record]:
        got: list[Record] = []
        deadline = time.monotonic() + 60
        while len(got) < count and time.monotonic() < deadline:
            got += consumer.poll_batch(max_records=5_000, timeout_s=0.2)
        return got

    try:
        producer.send_batch(topic, first)
        producer.flush()
        assert sorted(r.value for r in poll_until(len(first))) == sorted(v for _, v in first)
        consumer.commit()
        settle = time.monotonic() + 1.0  # a rejoin the new topic's metadata may still bring completes
        while time.monotonic() < settle:
            assert not consumer.poll_batch(max_records=5_000, timeout_s=0.2)
        inject(consumer)  # into kafka-python's internals: the fault
        producer.send_batch(topic, second)
        producer.flush()
        got = poll_until(len(second))
    finally:
        consumer.close()
        producer.close()
    assert sorted(r.value for r in got) == sorted(v for _, v in second), "each message once, none lost"
    return since(before)


@pytest.mark.kafka
def test_a_consumer_left_in_kafka_pythons_rebalance_limbo_rejoins_at_once(bus: KafkaBus) -> None:
    """The stall of CI, as traced in kafka-python 3.0.12: a rejoin the leader started because its
    metadata changed outlives the poll that began it; the assignment it performs makes the metadata
    agree again, so the next polls see no reason to rejoin and never complete the join: the member
    stays rebalancing, without partitions or heartbeats, for good."""

    def limbo(consumer: Any) -> None:
        kafka = consumer._kafka
        coordinator = kafka._coordinator
        assert coordinator.state == MemberState.STABLE and coordinator._join_task is None  # settled
        coordinator.state = MemberState.REBALANCING
        coordinator._disable_heartbeat()
        subscription = kafka._subscription  # revoked when the join began, as kafka-python does
        subscription.mark_pending_revocation(set(subscription.assigned_partitions()))
        assert not coordinator.need_rejoin()
        # A worker that commits now (its batch came before the limbo) goes on: kafka-python refuses
        # the commit while rebalancing, and the records are delivered again after the rejoin.
        consumer.commit()

    assert through_a_fault(bus, limbo, rejoin_bound_s=1e9) == {"rejoin": 1, "new_client": 0}


@pytest.mark.kafka
def test_a_consumer_whose_rebalance_never_completes_is_replaced(bus: KafkaBus) -> None:
    """Any other way a client stays out of its group: its JoinGroup/SyncGroup round trip never
    finishes. After ``rejoin_bound_s`` the consumer replaces the client, which resumes from the
    committed offsets."""

    def hang(consumer: Any) -> None:
        coordinator = consumer._kafka._coordinator

        async def never_completes() -> None:
            coordinator.state = MemberState.REBALANCING  # as the real round trip does first
            await KafkaFuture()

        coordinator._do_join_and_sync_async = never_completes
        coordinator.request_rejoin()

    assert through_a_fault(bus, hang, rejoin_bound_s=3.0) == {"rejoin": 0, "new_client": 1}


@pytest.mark.kafka
def test_only_revocations_of_partitions_reach_the_revoke_callback(bus: KafkaBus) -> None:
    """kafka-python reports an empty revocation before every join, a new client's first included
    (as after a replacement, above): the callbacks see what the in-process bus reports."""
    topic = fresh("revoke")
    bus.create_topics([topic], 2)
    events: list[tuple[str, set]] = []
    consumer = bus.consumer(
        [topic],
        fresh("group"),
        on_assign=lambda tps: events.append(("assign", tps)),
        on_revoke=lambda tps: events.append(("revoke", tps)),
    )
    try:
        deadline = time.monotonic() + 30
        while not consumer.assignment() and time.monotonic() < deadline:
            consumer.poll_batch(timeout_s=0.2)
        joined = list(events)
    finally:
        consumer.close()
    both = {(topic, 0), (topic, 1)}
    assert joined[-1] == ("assign", both)  # (a rejoin for the new topic's metadata may come first)
    assert all(tps for kind, tps in joined if kind == "revoke"), joined
    assert events[len(joined) :] == [("revoke", both)]  # closing gives them back


def kafka_python_batch(
    records: list[tuple[int, bytes | None, bytes | None, list]], base_offset: int
) -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=3,
        is_transactional=False,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 24,
    )
    for offset, (ts, key, value, headers) in enumerate(records):
        builder.append(offset, timestamp=ts, key=key, value=value, headers=headers)
    buf = builder.build()
    buf[0:8] = base_offset.to_bytes(8, "big")  # as the broker assigns it
    return bytes(buf)


def test_the_fast_decoder_reads_what_kafka_python_writes() -> None:
    t0 = 1_700_000_000_000
    records = [
        (t0, b"m00001", b"short", []),
        (t0 - 5, None, b"v" * 5000, [("h", b"header value"), ("n", None)]),  # earlier ts, long value
        (t0 + 10**9, b"k" * 200, b"", []),  # multi-byte varints
        (t0 + 1, b"m00002", None, []),  # a tombstone
        *[(t0 + i, b"m%05d" % i, b"%d" % i, []) for i in range(300)],  # offset deltas past 63 and 8191
    ]
    batch = DefaultRecordBatch(kafka_python_batch(records, base_offset=10_000))
    expected = [Record("t", 3, r.offset, r.key, r.value or b"", r.timestamp) for r in batch]
    raw = DefaultRecordBatch(kafka_python_batch(records, base_offset=10_000))
    raw._maybe_uncompress()
    got = decode_records(
        "t", 3, bytes(raw._buffer), raw._pos, raw.records_count, raw.base_offset, raw.first_timestamp
    )
    assert got == expected
    assert got[3].value == b"" and got[1].key is None and got[-1].offset == 10_000 + len(records) - 1


def test_the_fast_decoder_rejects_a_truncated_batch() -> None:
    raw = DefaultRecordBatch(kafka_python_batch([(1, b"k", b"value", [])] * 3, base_offset=0))
    raw._maybe_uncompress()
    with pytest.raises((ValueError, IndexError)):
        decode_records("t", 0, bytes(raw._buffer)[:-4], raw._pos, 3, 0, 1)
