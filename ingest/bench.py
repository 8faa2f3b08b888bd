"""``motorwatch bench bus``: readings through each bus, and the batched decoder against a naive one.

Rows: produce then consume ``count`` encoded motor readings through the in-process bus (and through
Kafka when ``--bus kafka`` or ``$MOTORWATCH_BOOTSTRAP`` names a broker); the same readings through
the in-process bus with a producer and a consumer thread under the default back-pressure bound;
:func:`ingest.schemas.decode_readings` in batches against per-message ``json.loads`` plus checks.
Rates are wall-clock, so they drop when other work shares the machine; each note also gives the
rate per CPU-second of this process (all its threads), which load changes far less.
"""

from __future__ import annotations

import json
import math
import os
import resource
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from ingest.benchtools import Span, rate
from ingest.bus import Bus
from ingest.inproc import InProcessBus
from ingest.profiles import Profile, load_profile
from ingest.schemas import Reading, decode_readings, encode

BATCH = 10_000  # messages per send_batch and per poll_batch
DECODE_BATCH = 4_096  # what a worker's run_once polls
DECODE_MAX = 200_000  # the naive decoder is slow: both decoders get this many at most
ASSETS = 1_000
SIGNALS = ("temperature_c", "vibration_mm_s", "current_a", "runtime_h")


class BusOptions(Protocol):
    """What this benchmark reads of ``motorwatch.config.BusConfig`` (ingest cannot import it)."""

    kind: str
    bootstrap: str | None
    partitions: int


def motor_readings(count: int, assets: int = ASSETS, seed: int = 7) -> list[tuple[bytes, bytes]]:
    """``count`` encoded motor readings of ``assets`` motors, keyed by asset id, in time order."""
    rng = np.random.default_rng(seed)
    temp = rng.normal(60, 8, count).round(2).tolist()
    vib = rng.gamma(2.0, 1.4, count).round(3).tolist()
    amps = rng.normal(42, 4, count).round(2).tolist()
    ids = [f"m{i:05d}" for i in range(assets)]
    keys = [a.encode() for a in ids]
    out = []
    for i in range(count):
        a = i % assets
        values = dict(zip(SIGNALS, (temp[i], vib[i], amps[i], i / 3600), strict=True))
        out.append((keys[a], encode(Reading(asset_id=ids[a], ts=1.7e9 + i // assets, values=values))))
    return out


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def produce_then_consume(bus: Bus, messages: list[tuple[bytes, bytes]], partitions: int) -> tuple[Span, Span]:
    """Time to produce (and flush) every message, then to consume (and commit) all of them."""
    topic, group = f"bench.bus.{uuid.uuid4().hex[:8]}", f"bench-{uuid.uuid4().hex[:8]}"
    bus.create_topics([topic], partitions)
    producer = bus.producer()
    produce = Span()
    for i in range(0, len(messages), BATCH):
        producer.send_batch(topic, messages[i : i + BATCH])
    producer.flush(timeout_s=120)
    produce.stop()
    consume = Span()
    consumer = bus.consumer([topic], group)
    got, deadline = 0, time.monotonic() + 600
    while got < len(messages) and time.monotonic() < deadline:
        got += len(consumer.poll_batch(max_records=BATCH, timeout_s=1.0))
        consumer.commit()
    consume.stop()
    consumer.close()
    producer.close()
    if got != len(messages):
        raise RuntimeError(f"consumed {got} of {len(messages)} messages from {topic}")
    return produce, consume


def pipelined(messages: list[tuple[bytes, bytes]], partitions: int) -> tuple[Span, int]:
    """A producer and a consumer thread through the in-process bus with its default bounds:
    the time for every message to be consumed and committed, and the most messages it held."""
    bus = InProcessBus(partitions=partitions)
    consumer = bus.consumer(["readings"], "features")
    done = threading.Event()
    got = 0

    def consume() -> None:
        nonlocal got
        while got < len(messages):
            got += len(consumer.poll_batch(max_records=BATCH, timeout_s=1.0))
            consumer.commit()
        done.set()

    thread = threading.Thread(target=consume, daemon=True)
    producer = bus.producer()
    held = 0
    span = Span()
    thread.start()
    for i in range(0, len(messages), BATCH):
        producer.send_batch("readings", messages[i : i + BATCH])
        held = max(held, bus.retained("readings"))
    if not done.wait(600):
        raise RuntimeError(f"consumer got {got} of {len(messages)} messages")
    return span.stop(), held


def naive_decode(raws: list[bytes], profile: Profile) -> tuple[list[tuple[str, float, list[float]]], int]:
    """The baseline: ``json.loads`` and Python checks per message. Returns (kept rows, rejected)."""
    names, lower, upper = profile.signal_names, profile.lower.tolist(), profile.upper.tolist()
    known = set(names)
    kept, rejected = [], 0
    for raw in raws:
        try:
            m = json.loads(raw)
            ok = isinstance(m, dict) and m["v"] == 1 and isinstance(m["asset_id"], str)
            ts, values = float(m["ts"]), m["values"]
            ok = ok and math.isfinite(ts) and isinstance(values, dict) and values.keys() <= known
            row = [float(values.get(s, math.nan)) for s in names]
        except (ValueError, KeyError, TypeError):
            ok = False
        if ok and all(math.isnan(v) or lo <= v <= hi for v, lo, hi in zip(row, lower, upper, strict=True)):
            kept.append((m["asset_id"], ts, row))
        else:
            rejected += 1
    return kept, rejected


def _timed(work: Callable[[], Any]) -> Span:
    span = Span()
    work()
    return span.stop()


def decode_spans(raws: list[bytes], profile: Profile) -> tuple[Span, Span]:
    """Best of three: ``decode_readings`` over worker-sized batches, and :func:`naive_decode`."""
    batches = [raws[i : i + DECODE_BATCH] for i in range(0, len(raws), DECODE_BATCH)]
    kept = sum(len(decode_readings(b, profile)[0]) for b in batches), len(naive_decode(raws, profile)[0])
    if kept != (len(raws), len(raws)):
        raise RuntimeError(f"the decoders disagree on clean readings: kept {kept} of {len(raws)}")
    fast = min((_timed(lambda: [decode_readings(b, profile) for b in batches]) for _ in range(3)), key=_cpu)
    naive = min((_timed(lambda: naive_decode(raws, profile)) for _ in range(3)), key=_cpu)
    return fast, naive


def _cpu(span: Span) -> float:
    return span.cpu


def _bus_rows(
    kind: str, bus: Bus, messages: list[tuple[bytes, bytes]], partitions: int, target: int
) -> list[dict]:
    produce, consume = produce_then_consume(bus, messages, partitions)
    both = produce + consume
    n = len(messages)
    common = {"unit": "readings/s", "target": f">= {target:,}"}
    return [
        {"benchmark": f"{kind} produce", "value": rate(n, produce.wall), **common,
         "note": f"{n:,} readings, send_batch({BATCH:,}), {partitions} partitions; {produce.per_cpu(n)}"},
        {"benchmark": f"{kind} consume", "value": rate(n, consume.wall), **common,
         "note": f"poll_batch({BATCH:,}) + commit per batch; {consume.per_cpu(n)}"},
        {"benchmark": f"{kind} produce then consume", "value": rate(n, both.wall), "unit": "readings/s",
         "note": f"each reading produced, then consumed: total time; {both.per_cpu(n)}"},
    ]  # fmt: skip


def run(count: int, bus: BusOptions, console: Any) -> list[dict]:
    """The ``bus`` benchmark rows (see the module docstring)."""
    console.print(f"encoding {count:,} motor readings ...")
    messages = motor_readings(count)
    rss_before = _peak_rss_mb()
    console.print("in-process bus ...")
    inproc = InProcessBus(partitions=bus.partitions, max_backlog=count)  # holds every reading at once
    rows = _bus_rows("inproc", inproc, messages, bus.partitions, 500_000)
    inproc.close()
    span, held = pipelined(messages, bus.partitions)
    rows.append(
        {"benchmark": "inproc pipelined", "value": rate(count, span.wall), "unit": "readings/s",
         "note": f"producer + consumer thread, default bounds: held at most {held:,}; {span.per_cpu(count)}"}
    )  # fmt: skip
    bootstrap = bus.bootstrap if bus.kind == "kafka" else os.environ.get("MOTORWATCH_BOOTSTRAP")
    if bootstrap:
        from ingest.kafka_bus import KafkaBus

        console.print(f"Kafka at {bootstrap} ...")
        kafka = KafkaBus(bootstrap)
        try:
            rows += _bus_rows("kafka", kafka, messages, bus.partitions, 50_000)
        finally:
            kafka.close()
    console.print("decoding ...")
    raws = [value for _, value in messages[:DECODE_MAX]]
    fast, naive = decode_spans(raws, load_profile("motor"))
    n = len(raws)
    rows += [
        {"benchmark": "decode_readings (batched)", "value": rate(n, fast.wall), "unit": "readings/s",
         "note": f"{n:,} readings in batches of {DECODE_BATCH:,}, into columns; {fast.per_cpu(n)}"},
        {"benchmark": "json.loads + checks (naive)", "value": rate(n, naive.wall), "unit": "readings/s",
         "note": f"per message, same checks; {naive.per_cpu(n)}"},
        {"benchmark": "decode speed-up", "value": naive.cpu / fast.cpu, "unit": "x", "target": ">= 5",
         "note": "naive CPU time / batched CPU time"},
        {"benchmark": "peak RSS", "value": _peak_rss_mb(), "unit": "MB",
         "note": f"whole run; {rss_before:,.0f} MB once the readings were encoded, before any bus"},
    ]  # fmt: skip
    return rows
