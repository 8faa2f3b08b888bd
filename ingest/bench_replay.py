"""Benchmark of replay: a Parquet log -> columnar chunks -> event-time merge -> encoded messages -> bus.

Measured in the same run: a time-sorted log (the simulator's layout), a log in per-asset blocks (the
C-MAPSS layout: external sort and merge), the encoder alone against the per-row reference, a naive
replay (pandas loads the whole log, one message built, encoded and sent per row), and the peak Python
memory of a replay against the log's size (chunks keep it bounded).
"""

from __future__ import annotations

import tempfile
import tracemalloc
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ingest.benchtools import Span, rate
from ingest.profiles import load_profile
from ingest.readers import DEFAULT_CHUNK_ROWS
from ingest.replay import replay
from ingest.schemas import Reading, ReadingBatch, encode, encode_readings, encode_readings_columnar

ASSETS = 1000
NAIVE_MAX_ROWS = 100_000  # the naive replay is slow: measured on a prefix


def write_log(path: Path, rows: int, by_asset: bool = False, seed: int = 0) -> None:
    """A motor log of ``rows`` readings from ``ASSETS`` motors at 1 Hz: time-sorted, or asset by asset."""
    rng = np.random.default_rng(seed)
    ticks = -(-rows // ASSETS)
    asset = np.tile(np.arange(ASSETS), ticks)[:rows]
    ts = 1.7e9 + np.repeat(np.arange(ticks, dtype=np.float64), ASSETS)[:rows]
    if by_asset:
        order = np.lexsort((ts, asset))
        asset, ts = asset[order], ts[order]
    table = pa.table(
        {
            "asset_id": pa.array([f"m{a:05d}" for a in asset.tolist()]),
            "ts": ts,
            "temperature_c": rng.uniform(30, 90, rows),
            "vibration_mm_s": rng.uniform(0.5, 8, rows),
            "current_a": rng.uniform(10, 60, rows),
            "runtime_h": rng.uniform(0, 40_000, rows),
        }
    )
    pq.write_table(table, path, row_group_size=128 * 1024)


def _naive(path: Path, producer, topic: str) -> int:
    """The obvious replay: the whole log in memory, one message per row."""
    df = pd.read_parquet(path).sort_values("ts", kind="stable")
    signals = [c for c in df.columns if c not in ("asset_id", "ts")]
    for row in df.itertuples(index=False):
        values = {s: getattr(row, s) for s in signals if not pd.isna(getattr(row, s))}
        producer.send_batch(
            topic, [(row.asset_id.encode(), encode(Reading(asset_id=row.asset_id, ts=row.ts, values=values)))]
        )
    producer.flush()
    return len(df)


def run(count: int, bus, console) -> list[dict]:
    profile = load_profile("motor")
    rows_out: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="motorwatch-bench-replay-") as tmp:
        sorted_log, blocks_log = Path(tmp) / "sorted.parquet", Path(tmp) / "blocks.parquet"
        write_log(sorted_log, count)
        write_log(blocks_log, count, by_asset=True)
        b = bus.build()
        try:
            topic = f"bench.replay.{uuid.uuid4().hex[:8]}"
            b.create_topics([topic], bus.partitions)
            producer = b.producer()

            def timed(path: Path) -> tuple[float, str]:
                with Span() as span:
                    result = replay([path], profile, producer, topic=topic, progress=False)
                assert result.published == count, result
                return rate(count, span.wall), f"{span.per_cpu(count)} rows"

            fast, fast_cpu = timed(sorted_log)
            blocks, blocks_cpu = timed(blocks_log)
            rows_out.append(
                {
                    "benchmark": "replay parquet -> bus (time-sorted log)",
                    "value": fast,
                    "unit": "rows/s",
                    "target": ">= 100000",
                    "note": f"{count:,} rows, {ASSETS} motors, {bus.kind} bus; {fast_cpu}",
                }
            )
            rows_out.append(
                {
                    "benchmark": "replay parquet -> bus (per-asset blocks: external sort)",
                    "value": blocks,
                    "unit": "rows/s",
                    "note": f"C-MAPSS layout: chunks sorted, spilled to Arrow, merged; {blocks_cpu}",
                }
            )
            naive_rows = min(count, NAIVE_MAX_ROWS)
            naive_log = Path(tmp) / "naive.parquet"
            write_log(naive_log, naive_rows)
            with Span() as span:
                _naive(naive_log, producer, topic)
            naive = rate(naive_rows, span.wall)
            rows_out.append(
                {
                    "benchmark": "naive replay (pandas whole log, per-row encode+send)",
                    "value": naive,
                    "unit": "rows/s",
                    "note": f"{naive_rows:,} rows",
                }
            )
            rows_out.append({"benchmark": "replay speed-up vs naive", "value": fast / naive, "unit": "x"})
            producer.close()
        finally:
            b.close()
        rows_out.extend(_encoder_rows(min(count, 200_000), profile.signal_names))
        small_log = Path(tmp) / "quarter.parquet"
        write_log(small_log, count // 4)
        rows_out.extend(_memory_row(path, profile) for path in (small_log, sorted_log))
    if console is not None:
        console.print(f"replay: {fast:,.0f} rows/s from Parquet to the {bus.kind} bus")
    return rows_out


def _encoder_rows(n: int, signals: tuple[str, ...]) -> list[dict]:
    rng = np.random.default_rng(1)
    batch = ReadingBatch(
        signals,
        [f"m{i % ASSETS:05d}" for i in range(n)],
        1.7e9 + np.arange(n, dtype=np.float64),
        rng.uniform(0, 100, (n, len(signals))),
        np.arange(n),
    )
    rates = {}
    for name, encoder in (("columnar", encode_readings_columnar), ("per-row", encode_readings)):
        with Span() as span:
            encoder(batch)
        rates[name] = rate(n, span.wall)
    return [
        {"benchmark": "encode readings (columnar)", "value": rates["columnar"], "unit": "msg/s"},
        {
            "benchmark": "encode readings (per-row Reading structs)",
            "value": rates["per-row"],
            "unit": "msg/s",
        },
        {
            "benchmark": "columnar encoder speed-up",
            "value": rates["columnar"] / rates["per-row"],
            "unit": "x",
        },
    ]


class _Discard:
    def send_batch(self, topic, messages) -> None:
        pass

    def flush(self, timeout_s=None) -> None:
        pass

    def close(self) -> None:
        pass


def _memory_row(path: Path, profile) -> dict:
    """Peak Python allocations while replaying ``path`` (to a producer that drops messages): set by the
    chunk size, not by the log's size."""
    tracemalloc.start()
    try:
        replay([path], profile, _Discard(), progress=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    meta = pq.ParquetFile(path).metadata
    in_memory = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    return {
        "benchmark": f"replay peak Python memory, {meta.num_rows:,}-row log",
        "value": peak / 2**20,
        "unit": "MiB",
        "note": f"log: {in_memory / 2**20:,.0f} MiB uncompressed; chunks of {DEFAULT_CHUNK_ROWS:,} rows",
    }
