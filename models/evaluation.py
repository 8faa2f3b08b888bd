"""Metrics on held-out assets: classification, calibration, alert lead time, and RUL error.

>>> round(nasa_score(np.array([10.0, 0.0]), np.array([0.0, 0.0])), 3)   # late by 10: exp(1) - 1
1.718
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def nasa_score(pred: np.ndarray, true: np.ndarray) -> float:
    """PHM08 asymmetric score: d = pred - true; exp(-d/13) - 1 when early, exp(d/10) - 1 when late."""
    d = np.asarray(pred, float) - np.asarray(true, float)
    return float(np.sum(np.where(d < 0, np.exp(-d / 13.0) - 1.0, np.exp(d / 10.0) - 1.0)))


def rul_metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """RMSE, MAE and the NASA score over rows with a known RUL."""
    k = ~np.isnan(true)
    d = pred[k] - true[k]
    if not k.any():
        return {"rmse": float("nan"), "mae": float("nan"), "nasa_score": float("nan"), "n": 0}
    return {
        "rmse": float(np.sqrt(np.mean(d**2))),
        "mae": float(np.mean(np.abs(d))),
        "nasa_score": nasa_score(pred[k], true[k]),
        "n": int(k.sum()),
    }


def classification_metrics(risk: np.ndarray, y: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Row-level precision, recall, F1 at ``threshold``; PR-AUC, ROC-AUC, Brier (rows with a known label)."""
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    k = ~np.isnan(y)
    r, t = risk[k], y[k].astype(int)
    hit = r >= threshold
    tp = int(np.sum(hit & (t == 1)))
    precision = tp / max(int(hit.sum()), 1)
    recall = tp / max(int(t.sum()), 1)
    both = len(np.unique(t)) == 2
    return {
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / max(precision + recall, 1e-12),
        "pr_auc": float(average_precision_score(t, r)) if both else float("nan"),
        "roc_auc": float(roc_auc_score(t, r)) if both else float("nan"),
        "brier": float(brier_score_loss(t, r)) if len(t) else float("nan"),
        "threshold": threshold,
        "n": int(k.sum()),
        "positives": int(t.sum()),
    }


def alert_events(
    asset_id: np.ndarray,
    ts: np.ndarray,
    risk: np.ndarray,
    events: pd.DataFrame,
    threshold: float,
    horizon: float,
    min_lead: float,
    lookback: float,
) -> dict[str, object]:
    """Alert-level view: when would an alert (risk >= threshold) have been raised before each failure?

    An alert *episode* is a run of consecutive rows of an asset at or above the threshold; it is raised
    at its first row. For each failure, the lead time is ``failure - first raise`` among episodes raised in
    ``[max(previous failure or maintenance, failure - lookback), failure)``. A failure is *detected* when
    its lead is >= ``min_lead``. An episode is a *true alert* when a failure follows its raise within
    ``horizon`` (precision). Rows must be sorted by asset, then time.
    """
    failures = events[events["kind"] == "failure"]
    resets = events[events["kind"].isin(["failure", "maintenance"])]
    above = risk >= threshold
    starts = above.copy()
    same = np.zeros(len(ts), dtype=bool)
    same[1:] = asset_id[1:] == asset_id[:-1]
    starts[1:] &= ~(above[:-1] & same[1:])
    raise_asset, raise_ts = asset_id[starts], ts[starts]
    leads: list[float] = []
    modes: list[str] = []
    for f in failures.itertuples(index=False):
        a, t_fail = str(f.asset_id), float(f.ts)
        if not np.any(asset_id == a):
            continue
        before = resets[(resets["asset_id"].astype(str) == a) & (resets["ts"] < t_fail)]["ts"]
        since = max(float(before.max()) if len(before) else -np.inf, t_fail - lookback)
        mine = raise_ts[(raise_asset == a) & (raise_ts >= since) & (raise_ts < t_fail)]
        leads.append(float(t_fail - mine.min()) if len(mine) else 0.0)
        modes.append(str(getattr(f, "mode", "")))
    fail_by_asset = {
        a: np.sort(g["ts"].to_numpy(float)) for a, g in failures.groupby(failures["asset_id"].astype(str))
    }
    true_alerts = 0
    for a, t0 in zip(raise_asset, raise_ts, strict=True):
        ft = fail_by_asset.get(str(a))
        if ft is not None and np.any((ft >= t0) & (ft - t0 <= horizon)):
            true_alerts += 1
    lead = np.asarray(leads)
    detected = lead >= min_lead
    return {
        "threshold": threshold,
        "failures": len(lead),
        "alerts_raised": int(starts.sum()),
        "alert_precision": true_alerts / max(int(starts.sum()), 1),
        "recall_at_min_lead": float(detected.mean()) if len(lead) else float("nan"),
        "min_lead": min_lead,
        "lead_quantiles": {q: float(np.quantile(lead, q / 100)) for q in (10, 25, 50, 75, 90)}
        if len(lead)
        else {},
        "leads": lead.tolist(),
        "modes": modes,
    }
