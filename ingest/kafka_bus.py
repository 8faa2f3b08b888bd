"""The bus on a real Kafka cluster, through kafka-python.

Throughput: kafka-python's ``KafkaProducer.send`` costs ~50-100 µs of Python per message (argument
checks, the partitioner, a future and two locks per record), far below what the pipeline needs. So
:meth:`_Producer.send_batch` builds each partition's record batch itself with kafka-python's own
batch encoder (``MemoryRecordsBuilder``, ~7 µs per record) and hands whole batches to the
producer's accumulator; kafka-python's sender thread still does everything else (idempotent
sequence numbers, lz4 compression, acks=all, retries, delivery timeouts). Placement uses
:func:`ingest.bus.partition_for` (cached per key), so an asset lands on the same partition as on the
in-process bus. The accumulator has no memory bound of its own: ``send_batch`` blocks while
``MAX_PENDING_BATCHES`` batches are unacknowledged.

Errors: an unreachable broker raises :class:`~ingest.bus.BusError` within ``timeout_s`` (the
constructor makes one metadata round trip); a batch the broker did not take raises at ``flush``.
Topics are never auto-created: create them with :meth:`KafkaBus.create_topics`.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from kafka import ConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import Fetcher
from kafka.errors import (
    CommitFailedError,
    CorruptRecordError,
    KafkaError,
    RebalanceInProgressError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from kafka.producer.producer_batch import ProducerBatch
from kafka.record.memory_records import MemoryRecordsBuilder
from kafka.structs import MemberState

from ingest.bus import RECOVERIES, BusError, RebalanceCallback, Record, partition_for
from ingest.bus import TopicPartition as TopicPartitionTuple
from ingest.kafka_records import decode_records

log = logging.getLogger(__name__)

CLIENT_ID = "motorwatch"
MAGIC_V2 = 2
LZ4 = 3  # the record batch attribute for lz4 compression
BATCH_BYTES = 1 << 20  # per partition and batch, before compression
MAX_PENDING_BATCHES = 64  # unacknowledged batches before send_batch blocks (~64 MiB at most)
LINGER_MS = 5
DEFAULT_TIMEOUT_S = 5.0
DELIVERY_TIMEOUT_S = 30.0
MAX_POLL_INTERVAL_MS = 30_000
REJOIN_BOUND_S = 45.0  # longer than any rebalance the broker lets run (MAX_POLL_INTERVAL_MS)
_NO_HEADERS: tuple = ()

T = TypeVar("T")


def _connect(bootstrap: str, make: Callable[[], T]) -> T:
    """Build a kafka-python client, turning "no broker" into a BusError."""
    try:
        return make()
    except KafkaError as exc:
        raise BusError(f"Kafka broker at {bootstrap} is unreachable: {exc}") from exc


class KafkaBus:
    """The :class:`ingest.bus.Bus` on Kafka at ``bootstrap`` ("host:port[,host:port]").

    ``timeout_s`` bounds connecting, metadata and admin requests.
    """

    def __init__(self, bootstrap: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.bootstrap = bootstrap
        self._timeout_ms = int(timeout_s * 1000)
        self._admin = _connect(bootstrap, lambda: KafkaAdminClient(**self._client_config()))

    def _client_config(self) -> dict:
        return {
            "bootstrap_servers": self.bootstrap,
            "client_id": CLIENT_ID,
            "bootstrap_timeout_ms": self._timeout_ms,
            "request_timeout_ms": max(self._timeout_ms, 10_000),
        }

    def create_topics(self, topics: Sequence[str], partitions: int) -> None:
        """Create the topics that do not exist yet (existing ones are left as they are), and wait
        until every partition has a leader."""
        spec = {topic: {"num_partitions": partitions, "replication_factor": -1} for topic in topics}
        try:
            result = self._admin.create_topics(spec, timeout_ms=self._timeout_ms, raise_errors=False)
            for topic in result["topics"]:
                code = topic["error_code"]
                if code not in (0, TopicAlreadyExistsError.errno):
                    raise BusError(
                        f"cannot create topic {topic['name']}: {topic.get('error_message') or code}"
                    )
            self._admin.wait_for_topics(list(topics), timeout_ms=self._timeout_ms)
        except KafkaError as exc:
            raise BusError(f"cannot create topics {list(topics)} on {self.bootstrap}: {exc}") from exc

    def delete_topics(self, topics: Sequence[str]) -> None:
        """Delete the topics that exist (absent ones are skipped): a benchmark's or a test's own
        topics, once it is done with them."""
        try:
            result = self._admin.delete_topics(list(topics), timeout_ms=self._timeout_ms, raise_errors=False)
        except KafkaError as exc:
            raise BusError(f"cannot delete topics {list(topics)} on {self.bootstrap}: {exc}") from exc
        for topic in result["topics"]:  # kafka-python's DeleteTopics response: name and error code
            code = topic["error_code"]
            if code not in (0, UnknownTopicOrPartitionError.errno):
                raise BusError(f"cannot delete topic {topic['name']}: error {code}")

    def _describe(self, topic: str) -> dict | None:
        """The broker's description of ``topic``; None if it does not exist."""
        try:
            (described,) = self._admin.describe_topics([topic])
        except KafkaError as exc:
            raise BusError(f"cannot describe topic {topic}: {exc}") from exc
        if described["error_code"] == UnknownTopicOrPartitionError.errno:
            return None
        if described["error_code"]:
            raise BusError(f"topic {topic}: error {described['error_code']}")
        return described

    def partitions(self, topic: str) -> int:
        """The partition count of an existing topic."""
        described = self._describe(topic)
        if described is None:
            raise BusError(f"topic {topic} does not exist on {self.bootstrap}")
        return len(described["partitions"])

    def end_offsets(self, topic: str) -> list[int]:
        """The next offset of each partition of ``topic`` (one request to the partition leaders);
        ``[]`` for a topic that does not exist."""
        described = self._describe(topic)
        if described is None:
            return []
        tps = [TopicPartition(topic, p["partition_index"]) for p in described["partitions"]]
        tps.sort(key=lambda tp: tp.partition)
        consumer = _connect(self.bootstrap, lambda: KafkaConsumer(**self._client_config()))
        try:
            ends = consumer.end_offsets(tps)
        except KafkaError as exc:
            raise BusError(f"cannot read the end offsets of {topic}: {exc}") from exc
        finally:
            consumer.close()
        return [ends[tp] for tp in tps]

    def producer(self) -> _Producer:
        return _Producer(self)

    def consumer(
        self,
        topics: Sequence[str],
        group_id: str,
        *,
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
        rejoin_bound_s: float = REJOIN_BOUND_S,
    ) -> _Consumer:
        """See :meth:`ingest.bus.Bus.consumer`; ``rejoin_bound_s``: see :class:`_Consumer`."""
        return _Consumer(self, topics, group_id, on_assign, on_revoke, rejoin_bound_s=rejoin_bound_s)

    def close(self) -> None:
        self._admin.close()


class _Producer:
    """Batches per partition, built here; sent by kafka-python's sender thread (see module doc)."""

    def __init__(self, bus: KafkaBus) -> None:
        self._bus = bus
        timeout_ms = bus._timeout_ms
        self._kafka = _connect(
            bus.bootstrap,
            lambda: KafkaProducer(
                **bus._client_config(),
                acks="all",
                compression_type="lz4",
                linger_ms=LINGER_MS,
                batch_size=BATCH_BYTES,
                max_request_size=8 * BATCH_BYTES,
                max_block_ms=timeout_ms,
                delivery_timeout_ms=int(DELIVERY_TIMEOUT_S * 1000),
            ),
        )
        # kafka-python internals (pinned to kafka-python 3.x in pyproject.toml): whole batches go
        # straight into the accumulator; the sender thread drains, compresses and sends them.
        self._accumulator = self._kafka._accumulator
        self._sender = self._kafka._sender
        self._topic_partitions: dict[str, list[TopicPartition]] = {}
        self._placement: dict[int, dict[bytes, int]] = {}  # partition count -> key -> partition
        self._pending: collections.deque[ProducerBatch] = collections.deque()

    def send_batch(self, topic: str, messages: Iterable[tuple[bytes, bytes]]) -> None:
        tps = self._partitions_of(topic)
        place = self._placement.setdefault(len(tps), {})
        count = len(tps)
        open_batches: dict[int, MemoryRecordsBuilder] = {}
        timestamp_ms = int(time.time() * 1000)
        for key, value in messages:
            partition = place.get(key)
            if partition is None:
                partition = place[key] = partition_for(key, count)
            records = open_batches.get(partition)
            if records is None:
                records = open_batches[partition] = MemoryRecordsBuilder(MAGIC_V2, LZ4, BATCH_BYTES)
            if records.append(timestamp_ms, key, value, _NO_HEADERS) is None:  # full: ship it
                self._enqueue(tps[partition], records)
                records = open_batches[partition] = MemoryRecordsBuilder(MAGIC_V2, LZ4, BATCH_BYTES)
                records.append(timestamp_ms, key, value, _NO_HEADERS)
        for partition, records in open_batches.items():
            self._enqueue(tps[partition], records)

    def _partitions_of(self, topic: str) -> list[TopicPartition]:
        tps = self._topic_partitions.get(topic)
        if tps is None:
            try:
                ids = self._kafka.partitions_for(topic)
            except KafkaError as exc:
                raise BusError(
                    f"topic {topic} is unknown on {self._bus.bootstrap} (create it with create_topics "
                    f"first) or the broker is unreachable: {exc}"
                ) from exc
            tps = self._topic_partitions[topic] = [TopicPartition(topic, p) for p in sorted(ids)]
        return tps

    def _enqueue(self, tp: TopicPartition, records: MemoryRecordsBuilder) -> None:
        while len(self._pending) >= MAX_PENDING_BATCHES:
            self._settle_oldest()
        batch = ProducerBatch(tp, records)
        accumulator = self._accumulator
        with accumulator._tp_lock(tp):
            accumulator._batches[tp].append(batch)
            accumulator._incomplete.add(batch)
        self._pending.append(batch)
        self._sender.wakeup()

    def _settle_oldest(self) -> None:
        """Wait for the oldest unacknowledged batch; raise if the broker did not take it."""
        batch = self._pending.popleft()
        batch.produce_future.wait(DELIVERY_TIMEOUT_S + 5)
        self._check(batch)

    def _check(self, batch: ProducerBatch) -> None:
        future = batch.produce_future
        if not future.is_done:
            raise BusError(
                f"{batch.record_count} messages to {batch.topic_partition} not acknowledged in time"
            )
        if future.failed():
            raise BusError(
                f"{batch.record_count} messages to {batch.topic_partition} not written: {future.exception}"
            )

    def flush(self, timeout_s: float | None = None) -> None:
        try:
            self._kafka.flush(timeout=DELIVERY_TIMEOUT_S + 5 if timeout_s is None else timeout_s)
        except KafkaError as exc:
            raise BusError(f"flush to {self._bus.bootstrap} failed: {exc}") from exc
        while self._pending:
            self._check(self._pending.popleft())

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._kafka.close(timeout=DEFAULT_TIMEOUT_S)


class _Listener(ConsumerRebalanceListener):
    def __init__(self, on_assign: RebalanceCallback | None, on_revoke: RebalanceCallback | None) -> None:
        self._on_assign = on_assign
        self._on_revoke = on_revoke

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        # kafka-python also reports an empty revocation before every join, a client's first
        # included (e.g. a client replaced by _Consumer): as on the in-process bus, only a
        # revocation of partitions is one.
        tps = {(tp.topic, tp.partition) for tp in revoked}
        if tps and self._on_revoke is not None:
            self._on_revoke(tps)

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        if self._on_assign is not None:
            self._on_assign({(tp.topic, tp.partition) for tp in assigned})


class _FastPartitionRecords(Fetcher.PartitionRecords):
    """The fetched records of one partition, decoded by :func:`ingest.kafka_records.decode_records`
    straight into :class:`Record` (kafka-python's own path costs ~20 µs per record). No
    transactions: the project's producers are not transactional, and control batches are skipped."""

    def _unpack_records(self, tp, records, key_deserializer, value_deserializer):
        batch = records.next_batch()
        while batch is not None:
            if self.check_crcs and not batch.validate_crc():
                raise CorruptRecordError(
                    f"record batch of {tp} at offset {batch.base_offset} failed its crc check"
                )
            self.leader_epoch = batch.leader_epoch
            if not batch.is_control_batch:
                batch._maybe_uncompress()
                log_append = batch.timestamp_type == batch.LOG_APPEND_TIME
                try:
                    decoded = decode_records(
                        tp.topic,
                        tp.partition,
                        bytes(batch._buffer),
                        batch._pos,
                        batch.records_count,
                        batch.base_offset,
                        batch.max_timestamp if log_append else batch.first_timestamp,
                        log_append,
                    )
                except (ValueError, IndexError) as exc:
                    raise CorruptRecordError(
                        f"malformed record batch of {tp} at {batch.base_offset}: {exc}"
                    ) from exc
                self.records_read += len(decoded)
                self.bytes_read += batch.size_in_bytes
                for record in decoded:
                    self.next_fetch_offset = record.offset + 1
                    yield record
            self.next_fetch_offset = batch.next_offset
            batch = records.next_batch()
        self.drain()


class _Consumer:
    """A member of a consumer group; commits only on :meth:`commit` (never automatically).

    Self-healing, because kafka-python 3.0.12 can leave a member out of its group for good (seen on
    this project's CI, then traced): a rejoin that the leader starts because its metadata changed can
    outlive the poll that began it, and the assignment the leader performs makes the metadata agree
    again, so later polls see no reason to rejoin and never complete the join. The member stays
    "rebalancing", without partitions or heartbeats. :meth:`poll_batch` spots that limbo and asks
    for a rejoin, which completes at the next poll. As a backstop for any other way of getting
    stuck: the broker ends a rebalance within the rebalance timeout (``max_poll_interval_ms``), so a
    member not stable for ``rejoin_bound_s`` is stuck in the client, which is replaced by a fresh
    one that resumes from the committed offsets (records after the last commit are delivered again,
    as after any rebalance). Both count in ``motorwatch_kafka_consumer_recoveries_total{how}``."""

    def __init__(
        self,
        bus: KafkaBus,
        topics: Sequence[str],
        group_id: str,
        on_assign: RebalanceCallback | None,
        on_revoke: RebalanceCallback | None,
        *,
        rejoin_bound_s: float = REJOIN_BOUND_S,
    ) -> None:
        self._bus, self._topics, self._group_id = bus, list(topics), group_id
        self._listener = _Listener(on_assign, on_revoke)
        self._rejoin_bound_s = rejoin_bound_s
        self._unstable_since: float | None = None
        self._kafka = self._join()

    def _join(self) -> KafkaConsumer:
        """A new client subscribed to the topics (it joins the group on its first poll)."""
        bus = self._bus
        kafka = _connect(
            bus.bootstrap,
            lambda: KafkaConsumer(
                **bus._client_config(),
                group_id=self._group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=10_000,
                max_partition_fetch_bytes=8 * BATCH_BYTES,
                fetch_max_wait_ms=100,
                session_timeout_ms=10_000,
                heartbeat_interval_ms=1_000,
                # Also the broker's bound on a rebalance (see the class doc): every stage polls far
                # more often than this.
                max_poll_interval_ms=MAX_POLL_INTERVAL_MS,
            ),
        )
        kafka._fetcher.PartitionRecords = _FastPartitionRecords  # see _FastPartitionRecords
        # Know the topics' partitions before joining: a group whose leader assigns before the client
        # has the topics' metadata gets no partitions, and kafka-python may not rejoin for minutes.
        for topic in self._topics:
            kafka.partitions_for_topic(topic)
        kafka.subscribe(self._topics, listener=self._listener)
        return kafka

    def _check_membership(self) -> None:
        """Get the client out of the rebalance limbo; replace it when its membership has been
        unstable for longer than a rebalance can be (see the class doc)."""
        coordinator = self._kafka._coordinator
        state = coordinator.state
        if state == MemberState.STABLE:
            self._unstable_since = None
            return
        if state == MemberState.REBALANCING and not coordinator.need_rejoin():
            log.info("consumer of group %s: completing a rejoin kafka-python left pending", self._group_id)
            coordinator.request_rejoin()
            RECOVERIES.labels("rejoin").inc()
        now = time.monotonic()
        if self._unstable_since is None:
            self._unstable_since = now
        elif now - self._unstable_since > self._rejoin_bound_s:
            log.warning(
                "consumer of group %s not in a stable group for %.0f s (stuck in kafka-python): "
                "replacing it; records after the last commit are delivered again",
                self._group_id,
                now - self._unstable_since,
            )
            self._kafka.close(autocommit=False, timeout_ms=int(DEFAULT_TIMEOUT_S * 1000))
            self._kafka = self._join()
            self._unstable_since = None
            RECOVERIES.labels("new_client").inc()

    def poll_batch(self, max_records: int = 1000, timeout_s: float = 0.1) -> list[Record]:
        try:
            polled = self._kafka.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        except KafkaError as exc:
            raise BusError(f"poll failed: {exc}") from exc
        self._check_membership()
        if len(polled) == 1:
            return next(iter(polled.values()))
        return [record for records in polled.values() for record in records]

    def commit(self) -> None:
        """Commit the position after the last record returned from each assigned partition."""
        try:
            self._kafka.commit()
        except (CommitFailedError, RebalanceInProgressError) as exc:
            # The group rebalanced meanwhile, or is rebalancing now: the partitions' owners after it
            # re-read the uncommitted records (at-least-once), so this is not fatal for the caller.
            log.warning("commit skipped for a rebalance; uncommitted records will be re-delivered: %s", exc)
        except KafkaError as exc:
            raise BusError(f"commit failed: {exc}") from exc

    def assignment(self) -> set[TopicPartitionTuple]:
        return {(tp.topic, tp.partition) for tp in self._kafka.assignment()}

    def highwater(self) -> dict[TopicPartitionTuple, int]:
        """The end offset of each assigned partition as of the latest fetch (no broker request; a
        partition not fetched from yet is left out). With the offsets consumed: the consumer lag."""
        ends = {tp: self._kafka.highwater(tp) for tp in self._kafka.assignment()}
        return {(tp.topic, tp.partition): end for tp, end in ends.items() if end is not None}

    def close(self) -> None:
        self._kafka.close(autocommit=False)
