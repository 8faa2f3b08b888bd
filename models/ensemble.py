"""Blend the forest and the LSTM, then calibrate the blended risk, all fitted on validation assets.

Risk: ``w * p_forest + (1 - w) * p_lstm`` with ``w`` on a grid minimising validation log-loss, then a
monotone calibration map (Platt scaling by default, isotonic on request) so that a risk of 0.8 means
about 80% of such rows fail within the horizon. RUL: ``a * rul_forest + (1 - a) * rul_lstm`` with
``a`` minimising validation RMSE, clipped to ``[0, cap]``. Serving needs only numpy (``np.interp``).

>>> c = Calibrator.fit(np.array([0.1, 0.2, 0.7, 0.9]), np.array([0.0, 0.0, 1.0, 1.0]), "isotonic")
>>> c.apply(np.array([0.0, 0.95])).tolist()
[0.0, 1.0]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GRID = np.linspace(0.0, 1.0, 21)


@dataclass(frozen=True, slots=True)
class Calibrator:
    """A monotone non-decreasing map from raw to calibrated risk, stored as interpolation knots.

    ``platt`` (default): a logistic fit on the logit of the raw risk, strictly increasing, so it keeps
    the ranking (PR-AUC, ROC-AUC) of the raw risk and has two parameters (robust on a few validation
    assets). ``isotonic``: a free monotone step fit, for large validation sets.
    """

    x: np.ndarray
    y: np.ndarray
    method: str

    @classmethod
    def fit(cls, raw: np.ndarray, y: np.ndarray, method: str = "platt") -> Calibrator:
        if method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, y)
            return cls(np.asarray(iso.X_thresholds_, float), np.asarray(iso.y_thresholds_, float), method)
        if method != "platt":
            raise ValueError(f"calibration method must be platt or isotonic, got {method!r}")
        from sklearn.linear_model import LogisticRegression

        knots = np.concatenate(
            [[0.0], np.logspace(-6, -1, 60), np.linspace(0.1, 0.9, 81), 1 - np.logspace(-1, -6, 60), [1.0]]
        )
        if len(np.unique(y)) < 2:  # nothing to fit: the identity map
            return cls(knots, knots.copy(), method)
        lr = LogisticRegression(C=1e4).fit(_logit(raw)[:, None], y.astype(int))
        return cls(knots, lr.predict_proba(_logit(knots)[:, None])[:, 1], method)

    def apply(self, raw: np.ndarray) -> np.ndarray:
        return np.interp(raw, self.x, self.y)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, float), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


@dataclass(frozen=True, slots=True)
class Blend:
    """Fitted ensemble: blend weights and the risk calibrator."""

    risk_weight: float  # weight of the forest in the raw risk
    rul_weight: float  # weight of the forest in the RUL
    rul_cap: float
    calibrator: Calibrator

    def risk(self, p_forest: np.ndarray, p_lstm: np.ndarray) -> np.ndarray:
        return self.calibrator.apply(self.risk_weight * p_forest + (1.0 - self.risk_weight) * p_lstm)

    def rul(self, rul_forest: np.ndarray, rul_lstm: np.ndarray) -> np.ndarray:
        return np.clip(self.rul_weight * rul_forest + (1.0 - self.rul_weight) * rul_lstm, 0.0, self.rul_cap)


def _log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def fit_blend(
    p_forest: np.ndarray,
    p_lstm: np.ndarray,
    p_true: np.ndarray,
    rul_forest: np.ndarray,
    rul_lstm: np.ndarray,
    rul_true: np.ndarray,
    rul_cap: float,
    method: str = "platt",
) -> Blend:
    """Fit weights and calibration on validation rows (NaN labels are skipped)."""
    k = ~np.isnan(p_true)
    y = p_true[k]
    # Log-loss of each blend after calibration: the weight is judged by what serving will output.
    scores = []
    for w in GRID:
        raw = w * p_forest[k] + (1 - w) * p_lstm[k]
        scores.append(_log_loss(Calibrator.fit(raw, y, method).apply(raw), y))
    w = float(GRID[int(np.argmin(scores))])
    calibrator = Calibrator.fit(w * p_forest[k] + (1 - w) * p_lstm[k], y, method)
    r = ~np.isnan(rul_true)
    if not r.any():  # no validation asset failed: nothing to weigh the RUL models by, so an even blend
        return Blend(w, 0.5, float(rul_cap), calibrator)
    rmse = [
        np.sqrt(np.mean((np.clip(a * rul_forest[r] + (1 - a) * rul_lstm[r], 0, rul_cap) - rul_true[r]) ** 2))
        for a in GRID
    ]
    return Blend(w, float(GRID[int(np.argmin(rmse))]), float(rul_cap), calibrator)
