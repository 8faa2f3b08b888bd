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
    ``horizon`` (``alert_precision``). Rows must be sorted by asset, then time.

    With ``onset`` events in the ground truth (the simulator records when a failure's precursor starts),
    the *precursor* view counts only failures that had a precursor (a sudden failure gives no warning to
    detect), and an episode is also true when raised while a precursor is really under way (``onset``
    seen, no failure or maintenance since): the motor is degrading, even if the failure is days away.
    Without onset events (C-MAPSS: every engine degrades to failure), it equals the plain view.
    """
    kinds = events["kind"].to_numpy()
    ev_aid = events["asset_id"].astype(str).to_numpy()
    ev_ts = events["ts"].to_numpy(float)
    has_onsets = bool(np.any(kinds == "onset"))
    above = risk >= threshold
    starts = above.copy()
    same = np.zeros(len(ts), dtype=bool)
    same[1:] = asset_id[1:] == asset_id[:-1]
    starts[1:] &= ~(above[:-1] & same[1:])
    raise_asset, raise_ts = asset_id[starts].astype(str), ts[starts]
    leads: list[float] = []
    modes: list[str] = []
    precursor: list[bool] = []
    true_alerts = precursor_true = 0
    present = set(np.unique(asset_id.astype(str)))
    for a in sorted(present | set(ev_aid[kinds == "failure"])):
        mine = ev_aid == a
        order = np.argsort(ev_ts[mine], kind="stable")
        k, t_ev = kinds[mine][order], ev_ts[mine][order]
        modes_a = events["mode"].to_numpy()[mine][order] if "mode" in events else np.full(len(k), "")
        r = raise_ts[raise_asset == a]
        reset_ts = t_ev[np.isin(k, ["failure", "maintenance"])]
        fail_ts = t_ev[k == "failure"]
        onset_ts = t_ev[k == "onset"]
        if a in present:
            for i in np.flatnonzero(k == "failure"):
                t_fail = t_ev[i]
                prev = reset_ts[reset_ts < t_fail]
                since = max(prev.max() if len(prev) else -np.inf, t_fail - lookback)
                before = r[(r >= since) & (r < t_fail)]
                leads.append(float(t_fail - before.min()) if len(before) else 0.0)
                modes.append(str(modes_a[i]))
                start = prev.max() if len(prev) else -np.inf
                precursor.append(not has_onsets or bool(np.any((onset_ts > start) & (onset_ts < t_fail))))
        for t0 in r:
            hit = bool(np.any((fail_ts >= t0) & (fail_ts - t0 <= horizon)))
            last_onset = onset_ts[onset_ts <= t0].max() if np.any(onset_ts <= t0) else None
            active = last_onset is not None and not np.any((reset_ts > last_onset) & (reset_ts <= t0))
            true_alerts += hit
            precursor_true += hit or active
    lead = np.asarray(leads)
    detected = lead >= min_lead
    pre = np.asarray(precursor, dtype=bool)
    raised = int(starts.sum())
    return {
        "threshold": threshold,
        "failures": len(lead),
        "alerts_raised": raised,
        "alert_precision": true_alerts / max(raised, 1),
        "recall_at_min_lead": float(detected.mean()) if len(lead) else float("nan"),
        "min_lead": min_lead,
        "lead_quantiles": _quantiles(lead),
        "leads": lead.tolist(),
        "modes": modes,
        "precursor_failures": int(pre.sum()),
        "precursor_recall_at_min_lead": float(detected[pre].mean()) if pre.any() else float("nan"),
        "precursor_alert_precision": precursor_true / max(raised, 1),
        "precursor_lead_quantiles": _quantiles(lead[pre]),
    }


def _quantiles(lead: np.ndarray) -> dict[int, float]:
    return {q: float(np.quantile(lead, q / 100)) for q in (10, 25, 50, 75, 90)} if len(lead) else {}
