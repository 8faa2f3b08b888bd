"""What only the in-process bus promises: bounded memory, back-pressure, thread safety.

The behaviour it shares with Kafka is in tests/test_bus_contract.py.
"""

from __future__ import annotations

import threading
import time

import pytest

from ingest.bus import BusError
from ingest.inproc import InProcessBus


def messages(n: int, keys: int = 7, start: int = 0) -> list[tuple[bytes, bytes]]:
    return [(b"k%d" % (i % keys), b"%d" % i) for i in range(start, start + n)]


def test_log_is_trimmed_below_what_every_group_committed() -> None:
    bus = InProcessBus(partitions=2, max_backlog=10_000)
    fast, slow = bus.consumer(["t"], "fast"), bus.consumer(["t"], "slow")
    producer = bus.producer()
    for round_ in range(50):
        producer.send_batch("t", messages(100, start=round_ * 100))
        assert len(fast.poll_batch(max_records=1_000, timeout_s=0)) == 100
        fast.commit()
    # "slow" never committed: the log keeps everything for it, and it still gets every message.
    assert bus.retained("t") == 5_000
    assert len(slow.poll_batch(max_records=10_000, timeout_s=0)) == 5_000
    slow.commit()
    assert bus.retained("t") == 0


def test_a_topic_nobody_reads_keeps_a_bounded_tail() -> None:
    bus = InProcessBus(partitions=1, max_backlog=100)
    producer = bus.producer()
    for i in range(100):
        producer.send_batch("unread", messages(10, start=i * 10))
    assert bus.retained("unread") == 100
    late = bus.consumer(["unread"], "late")
    got = late.poll_batch(max_records=1_000, timeout_s=0)
    assert got[-1].value == b"999" and got[0].offset == 1_000 - len(got), "the newest messages, in order"


def test_producer_waits_for_a_lagging_group_then_resumes_when_it_commits() -> None:
    bus = InProcessBus(partitions=1, max_backlog=50, block_timeout_s=20)
    consumer = bus.consumer(["t"], "g")
    producer = bus.producer()
    producer.send_batch("t", messages(50))  # the partition is now full for group "g"
    done = threading.Event()

    def produce() -> None:
        producer.send_batch("t", messages(10, start=50))
        done.set()

    thread = threading.Thread(target=produce)
    thread.start()
    assert not done.wait(0.3), "the producer waits while group g has 50 uncommitted messages"
    got = consumer.poll_batch(max_records=100, timeout_s=0)
    assert done.wait(0.3) is False, "returned but not committed still counts as backlog"
    consumer.commit()
    assert done.wait(10), "a commit makes room"
    thread.join()
    assert [r.value for r in got + consumer.poll_batch(timeout_s=1)] == [b"%d" % i for i in range(60)]


def test_back_pressure_timeout_names_the_topic() -> None:
    bus = InProcessBus(partitions=1, max_backlog=5, block_timeout_s=0.2)
    bus.consumer(["sensor.readings"], "features")  # joined, never polls
    producer = bus.producer()
    producer.send_batch("sensor.readings", messages(5))
    started = time.monotonic()
    with pytest.raises(BusError, match=r"'sensor\.readings'.*'features'.*no commit within 0.2 s"):
        producer.send_batch("sensor.readings", messages(1))
    assert time.monotonic() - started >= 0.2


def test_single_threaded_runner_fails_fast_instead_of_deadlocking() -> None:
    bus = InProcessBus(partitions=1, max_backlog=5, block_timeout_s=30)
    consumer = bus.consumer(["t"], "g")
    producer = bus.producer()
    producer.send_batch("t", messages(20))  # one batch may exceed the bound: the check comes first
    consumer.poll_batch(max_records=3, timeout_s=0)  # this thread is the group's only poller
    started = time.monotonic()
    with pytest.raises(BusError, match="deadlock"):
        producer.send_batch("t", messages(1))
    assert time.monotonic() - started < 5
    # The runner's rule: drain the consumers between produces, and it never blocks.
    while consumer.poll_batch(max_records=3, timeout_s=0):
        consumer.commit()
    producer.send_batch("t", messages(1))


def test_concurrent_producers_and_consumers_lose_nothing_and_keep_key_order() -> None:
    bus = InProcessBus(partitions=4, max_backlog=500, block_timeout_s=30)
    members = [bus.consumer(["t"], "g") for _ in range(2)]
    received: list[list] = [[], []]
    stop = threading.Event()

    def consume(i: int) -> None:
        while not stop.is_set():
            received[i] += members[i].poll_batch(max_records=300, timeout_s=0.05)
            members[i].commit()

    held: list[int] = []

    def produce(tag: bytes) -> None:
        producer = bus.producer()
        for b in range(40):
            seqs = range(b * 50, b * 50 + 50)
            producer.send_batch("t", [(tag + b"%d" % (s % 9), tag + b":%d" % s) for s in seqs])
            held.append(bus.retained("t"))

    consumers = [threading.Thread(target=consume, args=(i,)) for i in range(2)]
    producers = [threading.Thread(target=produce, args=(tag,)) for tag in (b"x", b"y", b"z")]
    for t in consumers + producers:
        t.start()
    for t in producers:
        t.join(60)
    deadline = time.monotonic() + 30
    while sum(map(len, received)) < 6_000 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    for t in consumers:
        t.join(10)
    values = [r.value for part in received for r in part]
    assert len(values) == len(set(values)) == 6_000
    for part in received:
        by_key: dict[bytes, list[int]] = {}
        for r in part:
            by_key.setdefault(r.key, []).append(int(r.value.split(b":")[1]))
        assert all(seq == sorted(seq) for seq in by_key.values())
    # A partition takes a batch while under the bound: at most bound - 1 + one batch per partition.
    assert max(held) <= 4 * (500 + 50) and bus.retained("t") == 0


def test_uncommitted_records_go_to_the_next_owner_when_a_member_leaves() -> None:
    bus = InProcessBus(partitions=2)
    one, two = bus.consumer(["t"], "g"), bus.consumer(["t"], "g")
    bus.producer().send_batch("t", messages(40, keys=11))
    got_two = two.poll_batch(max_records=100, timeout_s=0)
    two.commit()
    got_one = one.poll_batch(max_records=100, timeout_s=0)  # returned, not committed
    assert len(got_one) + len(got_two) == 40 and got_one and got_two
    one.close()
    again = two.poll_batch(max_records=100, timeout_s=0)
    assert two.assignment() == {("t", 0), ("t", 1)}
    assert sorted(r.value for r in again) == sorted(r.value for r in got_one)


def test_messages_without_a_key_spread_over_partitions() -> None:
    bus = InProcessBus(partitions=3)
    bus.producer().send_batch("t", [(None, b"%d" % i) for i in range(9)])
    assert sorted(bus.end_offsets("t")) == [3, 3, 3]


def test_closed_bus_and_consumer_raise() -> None:
    bus = InProcessBus()
    consumer = bus.consumer(["t"], "g")
    consumer.close()
    with pytest.raises(BusError, match="closed"):
        consumer.poll_batch()
    producer = bus.producer()
    bus.close()
    with pytest.raises(BusError, match="closed"):
        producer.send_batch("t", messages(1))
