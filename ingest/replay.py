"""Replay historical logs onto the bus in event-time order, as fast as possible or paced.

Order. Readings go out sorted by ``(ts, file, row)``: event time first, then the order of the files
given, then row order within a file. The order is a property of the data alone, so the published
messages are byte-identical whatever the chunk size or batch size.

Memory. Nothing holds a whole log. A first pass reads only the time column of each file. A file whose
time never decreases is one sorted *run*, streamed in chunks. Any other file (C-MAPSS lists each
engine's cycles in turn) is sorted externally: each chunk is sorted and spilled to a memory-mapped
Arrow file in a temporary directory, and each spilled chunk is one run. All runs of all files are then
merged under a watermark: every run holds a buffer of rows; rows older than the smallest
newest-buffered time of all runs cannot be preceded by anything still unread, so they go out in one
vectorised batch, and the runs that set the watermark read on.

Pace. ``speed="max"`` publishes as fast as the bus takes it; a number ``f`` publishes a reading at
``f`` times real time relative to event time (1 time unit of the profile = 1 s). The clock and sleep
are injectable, so tests run paced replays without sleeping.

>>> import tempfile, pathlib
>>> from ingest.profiles import load_profile
>>> log = pathlib.Path(tempfile.mkdtemp()) / "plant.csv"
>>> _ = log.write_text("asset_id,ts,current_a\\nm2,11,1\\nm1,10,2\\nm1,oops,3\\n")
>>> sent = []
>>> class Collect:
...     def send_batch(self, topic, messages): sent.extend(messages)
...     def flush(self, timeout_s=None): pass
>>> motor = load_profile("motor")
>>> result = replay([log], motor, Collect(), progress=False, on_bad_row=print)  # doctest: +ELLIPSIS
/...plant.csv:4: unparseable: ts='oops' is not a number
>>> result.published, dict(result.skipped), [key for key, _ in sent]
(2, {'unparseable': 1}, [b'm1', b'm2'])
"""

from __future__ import annotations

import itertools
import logging
import math
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from ingest import topics
from ingest.bus import Producer, partition_for
from ingest.profiles import Profile
from ingest.readers import DEFAULT_CHUNK_ROWS, BadRow, read_chunks, scan_times
from ingest.schemas import ReadingBatch, encode_readings_columnar, reading_rows

DEFAULT_SEND_ROWS = 4096  # messages per send_batch: one round of the downstream stages on the in-process bus

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """Readings published, and rows skipped by reason. Every row of the logs is one or the other."""

    published: int
    skipped: Mapping[str, int]
    first_ts: float
    last_ts: float


def replay(
    paths: Sequence[str | Path],
    profile: Profile,
    producer: Producer,
    *,
    speed: float | str = "max",
    fmt: str | None = None,
    topic: str = topics.READINGS,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    send_rows: int = DEFAULT_SEND_ROWS,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    on_bad_row: Callable[[BadRow], None] | None = None,
    after_send: Callable[[], None] | None = None,
    progress: bool | None = None,
    columns: bool = False,
    shard: Shard | None = None,
) -> ReplayResult:
    """Publish the readings of ``paths`` to ``topic`` in event-time order; flush at the end.

    ``on_bad_row`` hears of each skipped row (default: a log warning). ``after_send`` runs after each
    ``send_batch`` of at most ``send_rows`` messages: a single-process pipeline runs its downstream
    stages there. ``progress``: a rich progress bar (default: when stdout is a terminal).
    ``columns``: send ``ReadingRow`` values instead of JSON, for a feature worker in this process
    on the in-process bus. ``shard``: publish only that shard's assets' readings (every row is still
    read, and a bad row skipped and reported, in every shard)."""
    factor = parse_speed(speed)
    skipped: Counter[str] = Counter()

    def bad_row(row: BadRow) -> None:
        skipped[row.reason] += 1
        (on_bad_row or _log_bad_row)(row)

    published, first, last = 0, math.nan, math.nan
    pace = _Pace(factor, clock, sleep, producer.flush) if factor is not None else None
    with ExitStack() as stack:
        scans = [scan_times(p, profile, fmt, chunk_rows) for p in paths]
        bar = stack.enter_context(_Progress(sum(rows for rows, _ in scans), progress))
        spill = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="motorwatch-replay-")))
        others = 0  # rows of the other shards: read, not published here

        def mine(chunks: Iterator[ReadingBatch]) -> Iterator[ReadingBatch]:
            """The shard's rows of each chunk, before any sort or merge."""
            nonlocal others
            for chunk in chunks:
                kept = chunk.take(shard.mask(chunk.asset_id))
                others += len(chunk) - len(kept)
                yield kept

        runs: list[Iterator[ReadingBatch]] = []
        for n, (path, (_, ordered)) in enumerate(zip(paths, scans, strict=True)):
            chunks = _reporting(read_chunks(path, profile, fmt, chunk_rows), bad_row)
            if shard is not None:
                chunks = mine(chunks)
            runs.extend(
                [chunks] if ordered else _spill_runs(chunks, spill / f"{n}.arrow", profile, chunk_rows)
            )
        for batch in merge_runs(runs, profile.signal_names):
            if math.isnan(first):
                first = float(batch.ts[0])
            last = float(batch.ts[-1])
            for start, end in _due(batch.ts, pace):
                rows = _rows(batch, start, end)
                messages = reading_rows(rows) if columns else encode_readings_columnar(rows)
                for i in range(0, len(messages), send_rows):
                    part = messages[i : i + send_rows]
                    producer.send_batch(topic, part)
                    if after_send is not None:
                        after_send()
                    published += len(part)
                bar.update(published + others + skipped.total())
        bar.update(published + others + skipped.total())
    producer.flush()
    return ReplayResult(published, {str(k): v for k, v in skipped.items()}, first, last)


@dataclass
class Shard:
    """Shard ``index`` of ``count`` of a log: the assets whose partition of ``partitions`` (as the bus
    places their readings, :func:`~ingest.bus.partition_for`) is ``index`` modulo ``count``. A shard
    holds whole partitions, so a feature worker sees in each partition what it would see in the
    whole log's (the same watermark), and shards replayed apart score exactly as the whole log."""

    index: int
    count: int
    partitions: int
    _mine: dict[str, bool] = field(default_factory=dict, repr=False, compare=False)  # asset -> ours

    def mask(self, asset_ids: Sequence[str]) -> np.ndarray:
        """Which of ``asset_ids`` are this shard's."""
        mine = self._mine
        for asset in set(asset_ids).difference(mine):
            mine[asset] = partition_for(asset.encode(), self.partitions) % self.count == self.index
        return np.fromiter(map(mine.__getitem__, asset_ids), bool, len(asset_ids))


def merge_runs(runs: Sequence[Iterator[ReadingBatch]], signals: Sequence[str]) -> Iterator[ReadingBatch]:
    """Merge runs (each sorted by ``ts``) into batches sorted by ``(ts, run, row)``.

    Watermark: no run can still produce a row older than the newest row buffered by the run that is
    furthest behind. Rows strictly older than that go out; ties wait until every run has read past them.
    """
    buffers = [ReadingBatch.empty(signals) for _ in runs]
    done = [False] * len(runs)
    while True:
        for i, run in enumerate(runs):
            while not done[i] and len(buffers[i]) == 0:
                nxt = next(run, None)
                done[i] = nxt is None
                if nxt is not None:
                    buffers[i] = nxt
        heads = [math.inf if done[i] else float(b.ts[-1]) for i, b in enumerate(buffers)]
        mark = min(heads, default=math.inf)
        cuts = [int(np.searchsorted(b.ts, mark, side="left")) for b in buffers]
        out = _concat([_rows(b, 0, c) for b, c in zip(buffers, cuts, strict=True) if c], signals)
        buffers = [_rows(b, c, len(b)) for b, c in zip(buffers, cuts, strict=True)]
        if len(out):
            yield out if len(runs) == 1 else out.take(np.argsort(out.ts, kind="stable"))
        if mark == math.inf:
            return
        for i, head in enumerate(heads):
            if head == mark:  # read on past the watermark
                nxt = next(runs[i], None)
                done[i] = nxt is None
                if nxt is not None:
                    buffers[i] = _concat([buffers[i], nxt], signals)


def _reporting(chunks: Iterator, bad_row: Callable[[BadRow], None]) -> Iterator[ReadingBatch]:
    for chunk in chunks:
        for row in chunk.bad:
            bad_row(row)
        if len(chunk.batch):
            yield chunk.batch


def _spill_runs(
    chunks: Iterator[ReadingBatch], path: Path, profile: Profile, chunk_rows: int
) -> list[Iterator[ReadingBatch]]:
    """Sort each chunk by time (stably: ties keep row order) into one record batch of an Arrow file;
    return one run per batch, reading the memory-mapped file a slice at a time."""
    signals = profile.signal_names
    schema = pa.schema(
        [("asset_id", pa.string()), ("ts", pa.float64()), ("index", pa.int64())]
        + [(s, pa.float64()) for s in signals]
    )
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for batch in chunks:
            b = batch.take(np.argsort(batch.ts, kind="stable"))
            columns = [pa.array(b.asset_id, pa.string()), b.ts, b.index, *b.values.T]
            writer.write_batch(pa.record_batch(columns, schema=schema))
    reader = pa.ipc.open_file(pa.memory_map(str(path)))
    slice_rows = max(256, chunk_rows // max(1, reader.num_record_batches))
    return [_read_run(reader, i, signals, slice_rows) for i in range(reader.num_record_batches)]


def _read_run(reader: pa.ipc.RecordBatchFileReader, i: int, signals: tuple[str, ...], rows: int):
    batch = reader.get_batch(i)
    for start in range(0, batch.num_rows, rows):
        part = batch.slice(start, rows)
        values = np.column_stack([part.column(s).to_numpy() for s in signals])
        yield ReadingBatch(
            signals,
            part.column("asset_id").to_pylist(),
            part.column("ts").to_numpy(),
            values,
            part.column("index").to_numpy(),
        )


def _rows(batch: ReadingBatch, start: int, end: int) -> ReadingBatch:
    """Rows ``start:end`` (views, no copy)."""
    return ReadingBatch(
        batch.signals,
        batch.asset_id[start:end],
        batch.ts[start:end],
        batch.values[start:end],
        batch.index[start:end],
    )


def _concat(batches: Sequence[ReadingBatch], signals: Sequence[str]) -> ReadingBatch:
    if len(batches) == 1:
        return batches[0]
    if not batches:
        return ReadingBatch.empty(signals)
    return ReadingBatch(
        tuple(signals),
        list(itertools.chain.from_iterable(b.asset_id for b in batches)),
        np.concatenate([b.ts for b in batches]),
        np.concatenate([b.values for b in batches]),
        np.concatenate([b.index for b in batches]),
    )


def parse_speed(speed: float | str) -> float | None:
    """``"max"`` -> None (no pacing); a positive number, or its text -> that factor of real time."""
    if speed == "max":
        return None
    try:
        factor = float(speed)
    except ValueError:
        raise ValueError(f"speed must be 'max' or a positive number, not {speed!r}") from None
    if not (factor > 0 and math.isfinite(factor)):
        raise ValueError(f"speed must be 'max' or a positive number, not {speed!r}")
    return factor


class _Pace:
    """Maps event time to wall time: the first reading goes out at once, the one ``d`` time units
    later ``d / factor`` seconds later. Flushes before each sleep so that what is due is delivered."""

    def __init__(
        self, factor: float, clock: Callable[[], float], sleep: Callable[[float], None], flush: Callable
    ) -> None:
        self.factor, self.clock, self.sleep, self.flush = factor, clock, sleep, flush
        self.origin: tuple[float, float] | None = None  # (event time, wall time) of the first reading

    def due(self, ts: float) -> float:
        """The newest event time that may go out now, after waiting for ``ts`` if it is not due yet."""
        if self.origin is None:
            self.origin = (ts, self.clock())
        t0, w0 = self.origin
        wait = w0 + (ts - t0) / self.factor - self.clock()
        if wait > 0:
            self.flush()
            self.sleep(wait)
        return t0 + (self.clock() - w0) * self.factor


def _due(ts: np.ndarray, pace: _Pace | None) -> Iterator[tuple[int, int]]:
    """``(start, end)`` row ranges to send in turn, each once it is due (at once when not paced)."""
    start, n = 0, len(ts)
    while start < n:
        end = n if pace is None else max(start + 1, int(np.searchsorted(ts, pace.due(ts[start]), "right")))
        yield start, end
        start = end


def _log_bad_row(row: BadRow) -> None:
    logger.warning("skipped %s", row)


class _Progress:
    """A rich progress bar over rows read, or nothing when not on a terminal."""

    def __init__(self, total: int, show: bool | None) -> None:
        self.total = total
        self.show = sys.stdout.isatty() if show is None else show
        self.bar = None

    def __enter__(self) -> _Progress:
        if self.show:
            from rich.progress import Progress

            self.bar = Progress(*Progress.get_default_columns(), "{task.completed:,} rows")
            self.bar.start()
            self.task = self.bar.add_task("replay", total=self.total)
        return self

    def update(self, rows: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=rows)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
