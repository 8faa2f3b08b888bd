"""A historical log turned into a labelled feature matrix: the input of training and evaluation.

Two kinds of log: a simulator directory (``readings.parquet`` + ``events.parquet`` ground truth), or a
NASA C-MAPSS text file, where every engine runs to failure: its failure is recorded at its last cycle
(RUL 0 there, the usual convention for the training files). Features come from ``features.batch``,
the same spec the stream computes; rows are sorted by asset, then time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.spec import FeatureSpec
from ingest.profiles import Profile
from models.labels import MAINTENANCE, LabelConfig, Labels, make_labels

EVENTS_FILE = "events.parquet"
EVENT_COLUMNS = ("asset_id", "ts", "kind", "mode", "detail")


@dataclass(frozen=True)
class LabelledLog:
    """Feature rows of a log (sorted by asset then time) with their labels and the log's ground truth."""

    asset_id: np.ndarray  # str, (n,)
    ts: np.ndarray  # float64, (n,)
    values: np.ndarray  # float32, (n, f), NaN where a feature is undefined
    labels: Labels
    events: pd.DataFrame
    feature_names: tuple[str, ...]

    def rows_of(self, assets: tuple[str, ...] | list[str]) -> np.ndarray:
        return np.flatnonzero(np.isin(self.asset_id, np.asarray(assets, dtype=object)))


def read_events(path: Path, readings: pd.DataFrame, fmt: str) -> pd.DataFrame:
    """Ground truth of a log: the simulator's events file, or C-MAPSS failures at each unit's last cycle."""
    if fmt == "cmapss":
        last = readings.groupby("asset_id", sort=True)["ts"].max()
        return pd.DataFrame(
            {
                "asset_id": last.index.astype(str),
                "ts": last.to_numpy(float),
                "kind": "failure",
                "mode": "run_to_failure",
                "detail": "",
            }
        )
    events_path = (path if path.is_dir() else path.parent) / EVENTS_FILE
    if not events_path.is_file():
        raise FileNotFoundError(
            f"{events_path}: a training log needs its ground-truth events beside the readings"
        )
    events = pd.read_parquet(events_path)
    events["asset_id"] = events["asset_id"].astype(str)
    return events


def load(path: Path, profile: Profile, spec: FeatureSpec, labels: LabelConfig) -> LabelledLog:
    """Read the log, compute features with the batch engine, and label every feature row."""
    from features.batch import compute_features
    from ingest.readers import detect_format, read_log

    path = Path(path)
    fmt = detect_format(path)
    readings = read_log(path, profile, fmt)
    if readings.empty:
        raise ValueError(f"{path}: no readings")
    events = read_events(path, readings, fmt)
    maintenance = events[events["kind"] == MAINTENANCE][["asset_id", "ts"]]
    frame = compute_features(readings, spec, maintenance=maintenance if len(maintenance) else None)
    frame = frame.sort_values(["asset_id", "ts"], kind="stable").reset_index(drop=True)
    log_end = readings.groupby("asset_id")["ts"].max().to_dict()
    asset_id = frame["asset_id"].astype(str).to_numpy(dtype=object)
    ts = frame["ts"].to_numpy(np.float64)
    return LabelledLog(
        asset_id=asset_id,
        ts=ts,
        values=frame[list(spec.names)].to_numpy(np.float32),
        labels=make_labels(asset_id, ts, events, labels, log_end),
        events=events,
        feature_names=spec.names,
    )
