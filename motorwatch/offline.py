"""Offline scoring of historical logs (``motorwatch replay LOG --out scores.csv``): a back-test.

Replay, the feature worker and the scorer run together on an in-process bus (see
:mod:`motorwatch.pipeline`), in one process per core, each taking the assets of some partitions
(a :class:`~ingest.replay.Shard`). The scorer hands its scores straight to the file's columns (its
``score_sink``: nobody else reads them), and a reader of the alerts topic folds the alert states
in, one row per emitted score: ``asset_id, ts, risk, rul, alert_state, priority, model_version``.
``alert_state`` is the asset's alert after that score (``active`` or ``none``), ``priority`` that
alert's priority (empty when none). Flood protection is off: it would hold back an asset's raise
because of the rest of the fleet.

Rows are written sorted by ``(ts, asset_id)``: the order is a property of the log and the model
alone, so the file is byte-identical whatever the batch sizes and the number of processes. That
sort holds the scores in memory as columns (about 40 bytes a score); thin a long log's output with
``score_interval``."""

from __future__ import annotations

import gc
import itertools
import math
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from ingest import topics
from ingest.bus import Bus
from ingest.inproc import InProcessBus
from ingest.profiles import Profile
from ingest.readers import BadRow
from ingest.replay import ReplayResult, Shard, replay
from ingest.schemas import Alert, DeadLetter, ScoreBlock, decode_many
from models.registry import Registry
from motorwatch.forked import can_fork, in_processes
from motorwatch.pipeline import DEAD_LETTER_TOPICS, Pipeline, latest_model, values_by_topic
from scoring.config import PRIORITIES
from scoring.worker import ScorerConfig

COLUMNS = ("asset_id", "ts", "risk", "rul", "alert_state", "priority", "model_version")
_GROUP = "motorwatch-offline"
# Readings per send, and records per stage round: a back-test has no latency to keep, and larger
# rounds spread each round's Python over more rows (bench offline: 48-50k readings/s at the live
# sizes, 1,024 and 4,096; 56k at 8,192; 16,384 adds nothing).
BATCH = 8192
PARTITIONS = 6  # of each topic: a back-test's shards hold whole partitions (ingest.replay.Shard)
_PRIORITIES = ("", *PRIORITIES)  # an alert's priority in the output; empty: no active alert
_PRIORITY = {p: i for i, p in enumerate(_PRIORITIES)}


@dataclass
class OfflineResult:
    """What the replay published and skipped, how many scores were written, and the dead letters
    of the stages by reason: every row of the log is a score's input, skipped, or dead-lettered."""

    replay: ReplayResult
    scores: int
    dead_letters: dict[str, int]
    alerts: int
    processes: int


@dataclass
class _ShardResult:
    """What one pipeline produced: the scorer's score blocks, the alerts ``(asset_id, ts, state,
    priority)``, the dead letters by reason, and what its replay published and skipped."""

    scores: list[ScoreBlock] = field(default_factory=list)
    alerts: list[tuple[str, float, str, str]] = field(default_factory=list)
    dead_letters: Counter[str] = field(default_factory=Counter)
    replay: ReplayResult | None = None


class _Outputs:
    """Reads a pipeline's alerts and dead letters off the bus into a :class:`_ShardResult` (one batch
    decode per poll); the scorer hands it its score blocks directly (its ``score_sink``)."""

    def __init__(self, bus: Bus, into: _ShardResult) -> None:
        self.into = into
        self.consumer = bus.consumer([topics.ALERTS, *DEAD_LETTER_TOPICS], _GROUP)

    def __call__(self) -> int:
        records = self.consumer.poll_batch(65_536, 0.0)
        if not records:
            return 0
        by_topic = values_by_topic(records)
        alerts, _ = decode_many(by_topic.get(topics.ALERTS, []), Alert)
        self.into.alerts += [(a.asset_id, a.ts, a.state, a.priority) for _, a in alerts if a.kind != "flood"]
        for topic in DEAD_LETTER_TOPICS:
            letters, _ = decode_many(by_topic.get(topic, []), DeadLetter)
            self.into.dead_letters.update(str(d.reason) for _, d in letters)
        self.consumer.commit()
        return len(records)


def _table(s: list[ScoreBlock], alerts: list[tuple[str, float, str, str]]) -> pd.DataFrame:
    """The score rows with the alert state after each, sorted by ``(ts, asset_id)``."""
    ids = list(itertools.chain.from_iterable(b.asset_id for b in s))
    # Each asset id as its rank among them all: sorting by the code sorts by the id.
    names = sorted({*ids, *(a[0] for a in alerts)})
    code = dict(zip(names, itertools.count()))
    asset = np.fromiter(map(code.__getitem__, ids), np.int64, len(ids))
    ts = np.concatenate([np.empty(0), *(b.ts for b in s)])  # typed when there are none
    order = np.lexsort((asset, ts))
    versions, per_block = np.unique([b.model_version for b in s], return_inverse=True)
    frame = pd.DataFrame({"ts": ts[order], "asset": asset[order]})
    asset_id, alert_ts, state, priority = zip(*alerts, strict=True) if alerts else ([],) * 4
    raised = pd.DataFrame(
        {
            "ts": np.asarray(alert_ts, dtype=np.float64),
            "asset": np.fromiter(map(code.__getitem__, asset_id), np.int64, len(asset_id)),
            "active": np.isin(state, ["raised", "updated"]).astype(np.float64),
            "priority": np.fromiter(map(_PRIORITY.__getitem__, priority), np.float64, len(priority)),
        }
    ).sort_values("ts", kind="stable")  # stable: an asset's alerts at one ts stay in order
    # An alert raised by a score carries that score's ts: the score shows it (backward, inclusive).
    after = pd.merge_asof(frame, raised, on="ts", by="asset", direction="backward")
    active = (after["active"].to_numpy() == 1).astype(np.int8)
    level = np.nan_to_num(after["priority"].to_numpy()).astype(np.int8) * active
    return pd.DataFrame(
        {
            "asset_id": _strings(asset[order], names),
            "ts": ts[order],
            "risk": np.concatenate([np.empty(0), *(b.risk for b in s)])[order],
            "rul": np.concatenate([np.empty(0), *(b.rul for b in s)])[order],
            "alert_state": _strings(active, ["none", "active"]),
            "priority": _strings(level, _PRIORITIES),
            "model_version": _strings(np.repeat(per_block, [len(b.ts) for b in s])[order], versions),
        }
    )


def _strings(codes: np.ndarray, names: Sequence[str]) -> pd.api.extensions.ExtensionArray:
    """``names[codes]`` as a column of strings, built in Arrow (no Python string per row)."""
    strings = pa.DictionaryArray.from_arrays(codes, pa.array(list(names), pa.string()))
    return pd.array(strings.dictionary_decode(), dtype="str")


def score_logs(
    paths: Sequence[Path],
    profile: Profile,
    registry: Path,
    out: Path,
    *,
    fmt: str | None = None,
    score_interval: float = 0.0,
    send_rows: int = BATCH,
    on_bad_row: Callable[[BadRow], None] | None = None,
    progress: bool | None = None,
    json_between_stages: bool = False,
    workers: int | None = None,
) -> OfflineResult:
    """Replay ``paths`` through features and scoring with the registry's latest model at the start
    (kept to the end, so every score of a back-test comes from one model); write ``out``
    (``.csv`` or ``.parquet``). The stages hand readings and feature vectors over as columns;
    ``json_between_stages``: as JSON, as a Kafka deployment does (same output; for comparison).

    ``workers``: processes, each replaying one :class:`~ingest.replay.Shard` of the log through a
    pipeline of its own: this one, and forked ones (default: one per core where processes can be
    forked). Every asset's scores are independent of the others', so the output is the same bytes
    with any number. This process reports the bad rows and shows the progress."""
    if out.suffix not in (".csv", ".parquet"):
        raise ValueError(f"--out {out}: write .csv or .parquet")
    count = _worker_count(workers)
    threads = max(1, (os.cpu_count() or 1) // count)
    models = Registry(registry)
    model = models.pinned(latest_model(models))  # every shard scores with it, whatever is registered

    def shard(k: int) -> _ShardResult:
        return _score_shard(
            paths,
            profile,
            model,
            Shard(k, count, PARTITIONS) if count > 1 else None,
            fmt=fmt,
            score_interval=score_interval,
            send_rows=send_rows,
            # Every shard reads every row: the first (this process) reports the bad ones and the progress.
            on_bad_row=on_bad_row if k == 0 else _unreported,
            progress=progress if k == 0 else False,
            json_between_stages=json_between_stages,
            inference_threads=threads,
        )

    parts = [shard(0)] if count == 1 else in_processes(count, shard)
    alerts = [a for p in parts for a in p.alerts]
    table = _table([b for p in parts for b in p.scores], alerts)
    _write(table, out)
    dead_letters = dict(sum((p.dead_letters for p in parts), Counter()))
    return OfflineResult(_merged([p.replay for p in parts]), len(table), dead_letters, len(alerts), count)


def _score_shard(
    paths: Sequence[Path],
    profile: Profile,
    registry: Registry,
    shard: Shard | None,
    *,
    inference_threads: int,
    json_between_stages: bool,
    score_interval: float,
    **replay_options: Any,
) -> _ShardResult:
    """One pipeline on an in-process bus, fed the readings of ``shard`` (all: None) of ``paths``."""
    with _quiet_collector():
        bus = InProcessBus()
        try:
            # No live clock; one model for the whole log (``registry`` pinned to it); no flood protection.
            into = _ShardResult()
            scorer = ScorerConfig(
                score_interval=score_interval,
                measure_latency=False,
                inference_threads=inference_threads,
                score_sink=into.scores.append,
                flood_protection=False,  # each asset's alerts, whatever the rest of the fleet (or shard) does
            )
            pipeline = Pipeline.build(
                bus,
                profile,
                registry,
                scorer,
                partitions=PARTITIONS,
                json_features=json_between_stages,
                batch=BATCH,
                split=True,
            )
            outputs = _Outputs(bus, into)
            producer = bus.producer()
            into.replay = pipeline.run_split(
                lambda pump: replay(
                    paths,
                    profile,
                    producer,
                    after_send=pump,
                    columns=not json_between_stages,
                    shard=shard,
                    **replay_options,
                ),
                outputs,
            )
            pipeline.close()
        finally:
            bus.close()
    return into


def _worker_count(workers: int | None) -> int:
    """``workers``, or one per core where a process can be forked (a forked shard starts at once,
    with the libraries already loaded); 1 where it cannot."""
    if workers is not None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        if workers > 1 and not can_fork():
            raise ValueError(f"{workers} workers: this platform cannot fork processes; use 1")
        return workers
    return (os.cpu_count() or 1) if can_fork() else 1


def _merged(results: list[ReplayResult]) -> ReplayResult:
    """The replays of a log's shards as one: each published its own assets' readings; each read and
    skipped every bad row, so the first's count stands for all."""
    return ReplayResult(
        sum(r.published for r in results),
        results[0].skipped,
        min((r.first_ts for r in results if not math.isnan(r.first_ts)), default=math.nan),
        max((r.last_ts for r in results if not math.isnan(r.last_ts)), default=math.nan),
    )


def _unreported(row: BadRow) -> None:
    """A bad row seen by a shard other than the first, which reports it."""


@contextmanager
def _quiet_collector() -> Iterator[None]:
    """The garbage collector tuned for a back-test, which allocates a few tracked objects per reading
    (the bus's key-value pairs, lists of rows) that die within a round or two:

    - the objects that exist before it (the libraries' modules, the model) are frozen, so no full
      pass walks them again;
    - the young generation holds a few rounds' objects (700 by default), so most are freed before a
      pass looks at them.

    Both undone at the end. The collector stops every thread while it runs: on ``bench offline`` it
    took 0.25 s per 300k readings before, 0.03 s now (docs/benchmarks.md)."""
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(thresholds[0], 4 * BATCH), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _write(table: pd.DataFrame, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    if out.suffix == ".parquet":
        table.to_parquet(tmp, index=False)
    else:
        _write_csv(pa.Table.from_pandas(table, preserve_index=False), tmp)
    tmp.replace(out)


def _write_csv(table: pa.Table, path: Path) -> None:
    """``table`` as CSV, written by Arrow (10x pandas' ``to_csv``: 0.1 s for 300k scores, not 1 s).
    A plain header line; fields quoted only if one holds a comma, quote or line break; numbers in
    their shortest exact form (a whole number without ``.0``)."""
    with path.open("wb") as f:
        f.write((",".join(table.column_names) + "\n").encode())
        body = f.tell()
        for quoting in ("none", "needed"):  # "none" refuses a value that needs quotes
            try:
                pa_csv.write_csv(table, f, pa_csv.WriteOptions(include_header=False, quoting_style=quoting))
                return
            except pa.ArrowInvalid:
                f.seek(body)
                f.truncate()
