"""Offline scoring of historical logs (``motorwatch replay LOG --out scores.csv``): a back-test.

Replay, the feature worker and the scorer run in one process on the in-process bus (see
:mod:`motorwatch.pipeline`). The scorer hands its scores straight to the file's columns (its
``score_sink``: nobody else here reads them), and a reader of the alerts topic folds the alert
states in, one row per emitted score: ``asset_id, ts, risk, rul, alert_state, priority,
model_version``. ``alert_state`` is the asset's
alert after that score (``active`` or ``none``), ``priority`` that alert's priority (empty when none).

Rows are written sorted by ``(ts, asset_id)``: the order is a property of the log and the model
alone, so the file is byte-identical whatever the batch sizes. That sort holds the scores in
memory as columns (about 40 bytes a score); thin a long log's output with ``score_interval``.
"""

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

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from ingest import topics
from ingest.bus import Bus
from ingest.inproc import InProcessBus
from ingest.profiles import Profile
from ingest.readers import BadRow
from ingest.replay import ReplayResult, replay
from ingest.schemas import Alert, DeadLetter, ScoreBlock, decode_many
from motorwatch.pipeline import DEAD_LETTER_TOPICS, Pipeline, values_by_topic
from scoring.config import PRIORITIES
from scoring.worker import ScorerConfig

COLUMNS = ("asset_id", "ts", "risk", "rul", "alert_state", "priority", "model_version")
_GROUP = "motorwatch-offline"
# Readings per send, and records per stage round: a back-test has no latency to keep, and larger
# rounds spread each round's Python over more rows (bench offline: 48-50k readings/s at the live
# sizes, 1,024 and 4,096; 56k at 8,192; 16,384 adds nothing).
BATCH = 8192
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


@dataclass
class _Outputs:
    """The pipeline's outputs: the scorer's score blocks as it hands them over (its ``score_sink``),
    and the alerts and dead letters read off the bus (one batch decode per poll)."""

    bus: Bus
    scores: list[ScoreBlock]
    alerts: list[tuple[str, float, str, str]] = field(default_factory=list)
    dead_letters: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.consumer = self.bus.consumer([topics.ALERTS, *DEAD_LETTER_TOPICS], _GROUP)

    def __call__(self) -> int:
        records = self.consumer.poll_batch(65_536, 0.0)
        if not records:
            return 0
        by_topic = values_by_topic(records)
        alerts, _ = decode_many(by_topic.get(topics.ALERTS, []), Alert)
        self.alerts += [(a.asset_id, a.ts, a.state, a.priority) for _, a in alerts if a.kind != "flood"]
        for topic in DEAD_LETTER_TOPICS:
            letters, _ = decode_many(by_topic.get(topic, []), DeadLetter)
            self.dead_letters.update(str(d.reason) for _, d in letters)
        self.consumer.commit()
        return len(records)

    def table(self) -> pd.DataFrame:
        """The score rows with the alert state after each, sorted by ``(ts, asset_id)``."""
        s = self.scores
        ids = list(itertools.chain.from_iterable(b.asset_id for b in s))
        # Each asset id as its rank among them all: sorting by the code sorts by the id.
        names = sorted({*ids, *(a[0] for a in self.alerts)})
        code = dict(zip(names, itertools.count()))
        asset = np.fromiter(map(code.__getitem__, ids), np.int64, len(ids))
        ts = np.concatenate([np.empty(0), *(b.ts for b in s)])  # typed when there are none
        order = np.lexsort((asset, ts))
        versions, per_block = np.unique([b.model_version for b in s], return_inverse=True)
        frame = pd.DataFrame({"ts": ts[order], "asset": asset[order]})
        asset_id, alert_ts, state, priority = zip(*self.alerts, strict=True) if self.alerts else ([],) * 4
        alerts = pd.DataFrame(
            {
                "ts": np.asarray(alert_ts, dtype=np.float64),
                "asset": np.fromiter(map(code.__getitem__, asset_id), np.int64, len(asset_id)),
                "active": np.isin(state, ["raised", "updated"]).astype(np.float64),
                "priority": np.fromiter(map(_PRIORITY.__getitem__, priority), np.float64, len(priority)),
            }
        ).sort_values("ts", kind="stable")
        # An alert raised by a score carries that score's ts: the score shows it (backward, inclusive).
        after = pd.merge_asof(frame, alerts, on="ts", by="asset", direction="backward")
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
) -> OfflineResult:
    """Replay ``paths`` through features and scoring with the registry's latest model at the start
    (kept to the end, so every score of a back-test comes from one model); write ``out``
    (``.csv`` or ``.parquet``). The stages hand readings and feature vectors over as columns;
    ``json_between_stages``: as JSON, as a Kafka deployment does (same output; for comparison)."""
    if out.suffix not in (".csv", ".parquet"):
        raise ValueError(f"--out {out}: write .csv or .parquet")
    with _quiet_collector():
        bus = InProcessBus()
        try:
            # No live clock; inference on every core (a batch split across threads scores exactly as one);
            # one model for the whole log: a version registered meanwhile is not picked up.
            scores: list[ScoreBlock] = []
            scorer = ScorerConfig(
                score_interval=score_interval,
                measure_latency=False,
                inference_threads=os.cpu_count() or 1,
                reload_interval_s=math.inf,
                score_sink=scores.append,
            )
            pipeline = Pipeline.build(
                bus, profile, registry, scorer, json_features=json_between_stages, batch=BATCH, split=True
            )
            outputs = _Outputs(bus, scores)
            producer = bus.producer()
            result = pipeline.run_split(
                lambda pump: replay(
                    paths,
                    profile,
                    producer,
                    fmt=fmt,
                    on_bad_row=on_bad_row,
                    after_send=pump,
                    progress=progress,
                    send_rows=send_rows,
                    columns=not json_between_stages,
                ),
                outputs,
            )
            pipeline.close()
        finally:
            bus.close()
        table = outputs.table()
    _write(table, out)
    return OfflineResult(result, len(table), dict(outputs.dead_letters), len(outputs.alerts))


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
