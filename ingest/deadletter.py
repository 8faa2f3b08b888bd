"""The dead-letter path: rejected messages go to ``<topic>.dlq`` with their reason and original bytes.

A worker decodes a polled batch, then hands the rejections over in one line, before it flushes and
commits (so a rejected message is never lost between the two topics)::

    batch, rejections = decode_readings([r.value for r in records], profile)
    dead_letter(producer, records, rejections, stage="features")

Each dead letter is keyed like the original (so it lands with its asset) and counted in
``motorwatch_dead_letters_total{stage, reason}``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from prometheus_client import Counter

from ingest.bus import Producer, Record
from ingest.schemas import DeadLetter, Rejection, encode, raw
from ingest.topics import dead_letter_topic

# Bounded label values: the stages that dead-letter, and schemas.Reason.
STAGES = ("features", "scorer", "replay")

DEAD_LETTERS = Counter(
    "motorwatch_dead_letters_total",
    "Messages sent to a dead-letter topic, by the stage that rejected them and why.",
    ["stage", "reason"],
)


def dead_letter_messages(
    records: Sequence[Record], rejections: Iterable[Rejection], *, topic: str | None = None
) -> dict[str, list[tuple[bytes | None, bytes]]]:
    """The encoded dead letters of ``rejections`` (``index`` into ``records``), by destination topic.

    The destination is ``<record.topic>.dlq``, or ``topic`` when given (e.g. a replay that read
    files, not a topic, sends to ``sensor.readings.dlq``).
    """
    out: dict[str, list[tuple[bytes | None, bytes]]] = defaultdict(list)
    for rej in rejections:
        r = records[rej.index]
        letter = DeadLetter(
            topic=r.topic,
            partition=r.partition,
            offset=r.offset,
            reason=rej.reason,
            detail=rej.detail,
            raw=raw(r.value),  # a row handed over in one process: its JSON
        )
        out[topic or dead_letter_topic(r.topic)].append((r.key, encode(letter)))
    return out


def dead_letter(
    producer: Producer,
    records: Sequence[Record],
    rejections: Sequence[Rejection],
    *,
    stage: str,
    topic: str | None = None,
) -> int:
    """Send each rejected record to its dead-letter topic and count it; returns how many were sent.

    The caller still flushes the producer before committing its consumer.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r} (one of {', '.join(STAGES)}): it is a metric label")
    if not rejections:
        return 0
    for destination, messages in dead_letter_messages(records, rejections, topic=topic).items():
        producer.send_batch(destination, messages)
    for rej in rejections:
        DEAD_LETTERS.labels(stage, rej.reason.value).inc()
    return len(rejections)
