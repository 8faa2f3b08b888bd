"""Ground-truth labels from a log: failure within the horizon (``p_fail``) and remaining useful life.

A row at time ``t`` of an asset looks ahead to the next *end of its episode*:

- a **failure** at ``f >= t``: known. ``rul = f - t`` (capped), ``p_fail = rul <= horizon``;
- a **censoring** point ``c`` before any failure: a maintenance action (it resets health, so whether the
  asset would have failed is unknown) or the end of the asset's log. Then ``p_fail = 0`` only when
  ``c - t >= horizon`` (it provably survived the horizon), else unknown (NaN); ``rul`` is known only
  when ``c - t`` already exceeds the cap (then it is the cap), else unknown (NaN).

Unknown labels are dropped from the classification loss and from the RUL loss respectively; a censored
asset is never labelled healthy up to the end of its log.

>>> import pandas as pd
>>> lab = LabelConfig(horizon=2.0, rul_cap=3.0)
>>> ev = pd.DataFrame({"asset_id": ["a"], "ts": [5.0], "kind": ["failure"]})
>>> y = make_labels(["a"] * 5 + ["b"] * 3, [1.0, 2, 3, 4, 5, 1, 2, 3], ev, lab)
>>> y.p_fail.tolist(), y.rul.tolist()
([0.0, 0.0, 1.0, 1.0, 1.0, 0.0, nan, nan], [3.0, 3.0, 2.0, 1.0, 0.0, nan, nan, nan])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

# Seconds (or cycles) of event time per unit of remaining useful life.
_TIME_PER_RUL_UNIT: dict[tuple[str, str], float] = {
    ("s", "s"): 1.0,
    ("s", "min"): 60.0,
    ("s", "h"): 3600.0,
    ("s", "d"): 86400.0,
    ("cycle", "cycle"): 1.0,
}

FAILURE = "failure"
MAINTENANCE = "maintenance"


@dataclass(frozen=True, slots=True)
class LabelConfig:
    """``horizon`` in the profile's time unit; ``rul_cap`` in its RUL unit; ``time_per_rul`` converts."""

    horizon: float
    rul_cap: float
    time_per_rul: float = 1.0

    @classmethod
    def from_profile(cls, profile: Any) -> LabelConfig:
        """Read the profile's ``[labels]`` section (``horizon``, ``rul_cap``)."""
        section: Mapping[str, Any] = profile.section("labels")
        missing = {"horizon", "rul_cap"} - set(section)
        if missing:
            raise ValueError(f"profile {profile.name}: [labels] lacks {sorted(missing)}")
        key = (profile.time_unit, profile.rul_unit)
        if key not in _TIME_PER_RUL_UNIT:
            raise ValueError(
                f"profile {profile.name}: no conversion from time unit {key[0]} to RUL unit {key[1]}"
            )
        return cls(float(section["horizon"]), float(section["rul_cap"]), _TIME_PER_RUL_UNIT[key])


@dataclass(frozen=True, slots=True)
class Labels:
    """Per-row labels, NaN where unknown (censored). ``rul`` is in the profile's RUL unit."""

    p_fail: np.ndarray
    rul: np.ndarray


def make_labels(
    asset_id: Sequence[str] | np.ndarray,
    ts: Sequence[float] | np.ndarray,
    events: pd.DataFrame,
    config: LabelConfig,
    log_end: Mapping[str, float] | None = None,
) -> Labels:
    """Labels for rows ``(asset_id[i], ts[i])`` given the log's ground-truth ``events``.

    ``log_end``: the last time each asset was observed (default: its last row here); an event recorded
    later (a failure right after the last reading) extends it. Vectorised per asset.
    """
    aid = np.asarray(asset_id, dtype=object)
    t = np.asarray(ts, dtype=np.float64)
    p_fail = np.full(len(t), np.nan)
    rul = np.full(len(t), np.nan)
    kinds = events["kind"].to_numpy() if len(events) else np.array([], dtype=object)
    ev_aid = events["asset_id"].astype(str).to_numpy() if len(events) else np.array([], dtype=object)
    ev_ts = events["ts"].to_numpy(dtype=np.float64) if len(events) else np.array([])
    for asset, rows in pd.Series(np.arange(len(t))).groupby(aid, sort=False).indices.items():
        tt = t[rows]
        mine = ev_aid == asset
        failures = np.sort(ev_ts[mine & (kinds == FAILURE)])
        end = float(log_end[asset]) if log_end is not None and asset in log_end else float(tt.max())
        end = max(end, float(ev_ts[mine].max()) if mine.any() else end)  # the ground truth saw that far
        censors = np.sort(np.append(ev_ts[mine & (kinds == MAINTENANCE)], end))
        nf = _next_at_or_after(failures, tt)
        nc = _next_at_or_after(censors, tt)
        known = nf <= nc
        to_fail = nf - tt
        to_censor = nc - tt
        p = np.where(known, (to_fail <= config.horizon).astype(float), np.nan)
        p[~known & (to_censor >= config.horizon)] = 0.0
        r = np.where(known, np.minimum(to_fail / config.time_per_rul, config.rul_cap), np.nan)
        r[~known & (to_censor / config.time_per_rul >= config.rul_cap)] = config.rul_cap
        p_fail[rows] = p
        rul[rows] = r
    return Labels(p_fail, rul)


def _next_at_or_after(times: np.ndarray, t: np.ndarray) -> np.ndarray:
    """For each ``t``, the first of the sorted ``times`` that is ``>= t`` (inf when none)."""
    padded = np.append(times, np.inf)
    return padded[np.searchsorted(times, t, side="left")]


def failures_of(events: pd.DataFrame) -> pd.DataFrame:
    """The failure events (asset_id, ts, mode), sorted by asset and time."""
    f = events[events["kind"] == FAILURE]
    cols = [c for c in ("asset_id", "ts", "mode") if c in f.columns]
    return f[cols].sort_values(["asset_id", "ts"]).reset_index(drop=True)
