"""``motorwatch bench simulate``: readings generated into memory, published to the bus, written to Parquet.

Rows (each with its rate per CPU-second of this process beside the wall-clock rate, since the
machine is shared):

- generation: ``count`` readings of fleets of 1,000 and 20,000 motors at 1 reading/s, default sensor
  faults, into numpy columns (``Fleet.advance_columns``); target >= 1,000,000 readings/s;
- publishing: the :class:`simulator.publish.Publisher` at ``max`` pace (generate, encode, send, flush)
  to Kafka when the bus is Kafka (target >= 50,000 readings/s), else to the in-process bus, labelled so;
- Parquet: ``count`` readings of 200 motors at a 1-minute interval through ``simulate_to_files``,
  and the time this rate gives for the issue's full log (200 motors x 180 days, 51.8 M readings;
  target < 2 minutes; measured once at full size with ``time motorwatch simulate --motors 200
  --days 180 --interval 60s --seed 7 --out DIR``, see docs/benchmarks.md).
"""

from __future__ import annotations

import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

from ingest.benchtools import Span, rate_rows
from simulator.config import FleetConfig
from simulator.fleet import Fleet
from simulator.publish import Pacing, Publisher
from simulator.writers import simulate_to_files

GENERATE_FLEETS = (1_000, 20_000)
PUBLISH_MOTORS = 1_000
PUBLISH_MAX = 2_000_000  # readings: Kafka at the target rate takes ~40 s for this many
LOG_MOTORS, LOG_INTERVAL_S = 200, 60.0
FULL_LOG_READINGS = LOG_MOTORS * 180 * 1440


def _generation(count: int, motors: int) -> list[dict[str, Any]]:
    fleet = Fleet(FleetConfig(motors=motors, interval_s=1.0), seed=7)
    fleet.advance_columns(1)  # warm-up: the first noise block
    with Span() as span:
        n = len(fleet.advance_columns(max(1, count // motors)))
    note = f"{n:,} readings at 1/s, default faults"
    return rate_rows(f"generate into memory ({motors:,} motors)", span, n, note, ">= 1000000")


def _publishing(count: int, bus_options: Any) -> list[dict[str, Any]]:
    kind = bus_options.kind
    bus = bus_options.build()
    tag = uuid.uuid4().hex[:8]
    readings, maintenance = f"bench.simulate.{tag}", f"bench.simulate.{tag}.maintenance"
    try:
        bus.create_topics([readings, maintenance], bus_options.partitions)
        config = FleetConfig(motors=PUBLISH_MOTORS, interval_s=1.0)
        fleet = Fleet(config, seed=7)
        end_ts = config.start_ts + max(1, count // PUBLISH_MOTORS) * config.interval_s
        producer = bus.producer()
        publisher = Publisher(
            fleet,
            producer,
            Pacing.parse("max"),
            end_ts=end_ts,
            readings_topic=readings,
            maintenance_topic=maintenance,
        )
        with Span() as span:
            publisher.run(threading.Event())  # flushes before it returns
        producer.close()
    finally:
        bus.close()
    n = publisher.summary.readings
    if kind == "kafka":
        name, target = "publish to Kafka", ">= 50000"
    else:
        name, target = "publish to the in-process bus (not Kafka: --bus kafka measures that)", None
    note = (
        f"{n:,} readings of {PUBLISH_MOTORS:,} motors, generate+encode+send+flush, "
        f"{bus_options.partitions} partitions"
    )
    return rate_rows(name, span, n, note, target)


def _parquet(count: int) -> list[dict[str, Any]]:
    config = FleetConfig(motors=LOG_MOTORS, interval_s=LOG_INTERVAL_S)
    ticks = max(1, count // LOG_MOTORS)
    with tempfile.TemporaryDirectory(prefix="motorwatch-bench-simulate-") as tmp, Span() as span:
        summary = simulate_to_files(config, 7, Path(tmp), ticks * LOG_INTERVAL_S, "parquet")
    n = summary.readings
    wall, cpu = span.rates(n)
    days = ticks * LOG_INTERVAL_S / 86400
    note = f"{n:,} readings = {days:.1f} days"
    projected = {
        "benchmark": "200 motors x 180 days to Parquet (projected from the rows above)",
        "value": FULL_LOG_READINGS / wall,
        "unit": "s",
        "target": "< 120",
        "note": f"{FULL_LOG_READINGS / cpu:,.0f} CPU-s at the CPU rate; at full size: docs/benchmarks.md",
    }
    return [*rate_rows("write Parquet log (200 motors, 1-minute interval)", span, n, note), projected]


def run(count: int, bus: Any, console: Any) -> list[dict[str, Any]]:
    """The simulator's rows: ``count`` readings per measurement (publishing: at most ``PUBLISH_MAX``)."""
    rows = [row for motors in GENERATE_FLEETS for row in _generation(count, motors)]
    rows += _publishing(min(count, PUBLISH_MAX), bus)
    rows += _parquet(count)
    if console is not None:
        console.print(f"simulate: {rows[0]['value']:,.0f} readings/s generated into memory")
    return rows
