"""Train the Random Forest + LSTM ensemble from a log, evaluate it on held-out assets, build its card.

Steps: label the feature rows; split assets 70/15/15 (seeded); fit both forests and the LSTM on the
training assets (the LSTM early-stops on the validation assets); export both to ONNX; score the
validation assets *through the exported graphs* and fit the blend and the calibration there; evaluate
every model and the ensemble on the test assets, again through the serving path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from features.spec import FeatureSpec
from ingest.profiles import Profile
from models import evaluation, forest, lstm
from models.card import ModelCard, hash_data
from models.dataset import LabelledLog, load
from models.ensemble import fit_blend
from models.inference import ModelBundle, Predictor
from models.labels import LabelConfig
from models.scoring import score_rows
from models.sequences import asset_starts, sequence_step, window_index
from models.splits import AssetSplit, split_assets

ALERT_THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(2, 19))  # 0.10 ... 0.90
TARGET_PRECISION = 0.8


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    fractions: tuple[float, float, float] = (0.70, 0.15, 0.15)
    forest: forest.ForestConfig = field(default_factory=forest.ForestConfig)
    lstm: lstm.LSTMConfig = field(default_factory=lstm.LSTMConfig)
    max_forest_rows: int = 300_000  # training rows for the forests (seeded sample when the log is larger)
    max_eval_rows: int = 400_000  # validation/test rows scored (every k-th row of each asset beyond this)
    truncations: int = 5  # C-MAPSS protocol: random cut points per held-out engine

    @classmethod
    def for_profile(cls, profile: Profile, seed: int = 0) -> TrainConfig:
        """The full configuration, with the sizes the profile's ``[model.forest]`` and ``[model.lstm]``
        tables set (any :class:`~models.forest.ForestConfig` / :class:`~models.lstm.LSTMConfig` field):
        a fleet scored live may trade a little accuracy for serving speed, a benchmark dataset not."""
        section = profile.section("model")
        unknown = sorted(set(section) - {"forest", "lstm"})
        if unknown:
            raise ValueError(f"profile {profile.name}: [model] has unknown tables {unknown} (forest, lstm)")
        try:
            return cls(
                seed=seed,
                forest=forest.ForestConfig(**{"seed": seed, **section.get("forest", {})}),
                lstm=lstm.LSTMConfig(**{"seed": seed, **section.get("lstm", {})}),
            )
        except TypeError as exc:  # an unknown field name
            raise ValueError(f"profile {profile.name}: [model] {exc}") from None

    @classmethod
    def quick(cls, seed: int = 0) -> TrainConfig:
        """The demo configuration: small models, trained in well under a minute."""
        return cls(
            seed=seed,
            forest=forest.ForestConfig(n_estimators=30, max_depth=10, max_samples=15_000, seed=seed),
            lstm=lstm.LSTMConfig(units=24, dense=16, epochs=6, patience=2, max_sequences=12_000, seed=seed),
            max_forest_rows=60_000,
            max_eval_rows=100_000,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "fractions": list(self.fractions),
            "forest": self.forest.to_dict(),
            "lstm": self.lstm.to_dict(),
            "max_forest_rows": self.max_forest_rows,
            "max_eval_rows": self.max_eval_rows,
            "truncations": self.truncations,
        }


@dataclass(frozen=True)
class TrainResult:
    bundle: ModelBundle
    card: ModelCard
    split: AssetSplit
    # The fitted models before export (scikit-learn forests, LSTM weights), for benchmarks and parity tests.
    fitted: dict[str, Any] = field(default_factory=dict, repr=False)


def _sample(rows: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(rows, limit, replace=False)) if len(rows) > limit else rows


def _thin(rows: np.ndarray, limit: int) -> np.ndarray:
    """Every k-th row (k chosen so at most ``limit`` remain), keeping time order for lead-time metrics."""
    step = max(1, int(np.ceil(len(rows) / max(limit, 1))))
    return rows[::step]


def _alert_threshold(profile: Profile) -> float:
    return float(profile.section("alerts").get("on_risk", 0.5))


def train(data: Path, profile: Profile, spec: FeatureSpec, config: TrainConfig, log=print) -> TrainResult:
    """Train on the log at ``data``; returns the bundle and card, ready for ``Registry.save``."""
    started = time.perf_counter()
    log(f"reading {data} and computing {len(spec.names)} features ...")
    ds = load(data, profile, spec, LabelConfig.from_profile(profile))
    log(f"{len(ds.ts):,} feature rows, {len(np.unique(ds.asset_id))} assets")
    return fit(ds, profile, spec, config, hash_data(Path(data)), log, started)


def fit(
    ds: LabelledLog,
    profile: Profile,
    spec: FeatureSpec,
    config: TrainConfig,
    data_files: dict[str, str],
    log=print,
    started: float | None = None,
) -> TrainResult:
    """Train, blend, calibrate and evaluate on a labelled feature matrix (see :func:`train`)."""
    started = time.perf_counter() if started is None else started
    label_cfg = LabelConfig.from_profile(profile)
    split = split_assets(ds.asset_id, config.seed, config.fractions)
    rng = np.random.default_rng(config.seed)
    p, rul = ds.labels.p_fail, ds.labels.rul

    train_rows = ds.rows_of(split.train)
    fill = np.nanmedian(ds.values[train_rows], axis=0)
    fill = np.where(np.isnan(fill), 0.0, fill).astype(np.float32)
    values = np.where(np.isnan(ds.values), fill, ds.values).astype(np.float32)

    known_p = train_rows[~np.isnan(p[train_rows])]
    known_r = train_rows[~np.isnan(rul[train_rows])]
    if len(known_p) == 0 or np.nansum(p[known_p]) == 0:
        raise ValueError("no failures within the horizon in the training assets: nothing to learn")
    f_rows_p = _sample(known_p, config.max_forest_rows, rng)
    f_rows_r = _sample(known_r, config.max_forest_rows, rng)
    log(f"forests: {len(f_rows_p):,} classification rows, {len(f_rows_r):,} RUL rows ...")
    t0 = time.perf_counter()
    clf = forest.fit_classifier(values[f_rows_p], p[f_rows_p], config.forest)
    reg = forest.fit_regressor(values[f_rows_r], rul[f_rows_r], config.forest)
    forest_s = time.perf_counter() - t0

    starts = asset_starts(ds.asset_id)
    seq_len = config.lstm.seq_len
    labelled = train_rows[~(np.isnan(p[train_rows]) & np.isnan(rul[train_rows]))]
    l_train = _sample(labelled, config.lstm.max_sequences, rng)
    val_rows = ds.rows_of(split.validation)
    l_val = _sample(val_rows, config.lstm.max_sequences // 2, rng)
    log(f"LSTM: {len(l_train):,} training windows of {seq_len}, {len(l_val):,} validation windows ...")
    t0 = time.perf_counter()
    weights, history = lstm.fit(
        values,
        window_index(l_train, starts, seq_len),
        p[l_train],
        rul[l_train],
        window_index(l_val, starts, seq_len),
        p[l_val],
        rul[l_val],
        label_cfg.rul_cap,
        config.lstm,
    )
    lstm_s = time.perf_counter() - t0

    healthy = train_rows[p[train_rows] == 0]
    base_rows = healthy if len(healthy) else train_rows
    baseline = np.median(values[base_rows], axis=0)
    scale = values[base_rows].std(axis=0)
    lstm_onnx = lstm.to_onnx(weights, seq_len)
    bundle = ModelBundle(
        forest_onnx=forest.to_onnx(clf, reg, len(spec.names)),
        lstm_onnx=lstm_onnx,
        lstm_stateful=lstm.stateful_graphs(lstm_onnx),
        feature_names=spec.names,
        fingerprint=spec.fingerprint(),
        feature_spec={
            "profile": profile.name,
            "names": list(spec.names),
            "section": _plain(profile.section("features")),
        },
        seq_len=seq_len,
        seq_step=sequence_step(ds.asset_id, ds.ts),
        rul_unit=profile.rul_unit,
        rul_cap=label_cfg.rul_cap,
        horizon=label_cfg.horizon,
        fill=fill,
        baseline=baseline.astype(np.float64),
        scale=np.where(scale > 1e-9, scale, 1.0).astype(np.float64),
        importance=clf.feature_importances_.astype(np.float64),
    )

    log("fitting the ensemble and its calibration on the validation assets ...")
    raw = Predictor(bundle)
    v_rows = _thin(val_rows, config.max_eval_rows)
    vs = score_rows(raw, ds.values, ds.asset_id, v_rows)
    blend = fit_blend(
        vs["forest"][0],
        vs["lstm"][0],
        p[v_rows],
        vs["forest"][1],
        vs["lstm"][1],
        rul[v_rows],
        label_cfg.rul_cap,
    )
    bundle = bundle.with_blend(blend)
    predictor = Predictor(bundle)

    log("evaluating on the test assets ...")
    metrics = assess(predictor, ds, split.test, profile, label_cfg, config)
    metrics["validation"] = assess(predictor, ds, split.validation, profile, label_cfg, config)
    metrics["operating_point"] = operating_point(metrics["validation"], metrics)
    metrics["ensemble_fit"] = {
        "risk_weight_forest": blend.risk_weight,
        "rul_weight_forest": blend.rul_weight,
        "calibration": blend.calibrator.method,
    }
    metrics["lstm_history"] = history
    elapsed = time.perf_counter() - started
    card = ModelCard(
        profile=profile.name,
        params=config.to_dict()
        | {
            "labels": {
                "horizon": label_cfg.horizon,
                "rul_cap": label_cfg.rul_cap,
                "time_unit": profile.time_unit,
                "rul_unit": profile.rul_unit,
            }
        },
        metrics=metrics,
        data_files=data_files,
        feature_spec=bundle.feature_spec,
        fingerprint=bundle.fingerprint,
        split=split.to_dict(),
        training_time_s=elapsed,
    )
    card = replace(
        card, metrics=metrics | {"timing_s": {"forest_fit": forest_s, "lstm_fit": lstm_s, "total": elapsed}}
    )
    fitted = {"forest_classifier": clf, "forest_regressor": reg, "lstm_weights": weights}
    return TrainResult(bundle, card, split, fitted)


def assess(
    predictor: Predictor,
    ds: LabelledLog,
    assets: tuple[str, ...],
    profile: Profile,
    labels: LabelConfig,
    config: TrainConfig,
) -> dict[str, Any]:
    """Metrics of each model and the ensemble on ``assets``, scored through the serving path."""
    rows = _thin(ds.rows_of(assets), config.max_eval_rows)
    scores = score_rows(predictor, ds.values, ds.asset_id, rows)
    p, rul = ds.labels.p_fail[rows], ds.labels.rul[rows]
    threshold = _alert_threshold(profile)
    events = ds.events[ds.events["asset_id"].isin(set(assets))]
    out: dict[str, Any] = {"assets": len(assets), "rows": len(rows), "time_unit": profile.time_unit}
    for name, (risk, r) in scores.items():

        def alerts(at: float, risk=risk) -> dict[str, Any]:
            return evaluation.alert_events(
                ds.asset_id[rows],
                ds.ts[rows],
                risk,
                events,
                at,
                labels.horizon,
                min_lead=labels.horizon / 2,
                lookback=4 * labels.horizon,
            )

        out[name] = {
            "classification": evaluation.classification_metrics(risk, p, 0.5),
            "classification_at_alert_threshold": evaluation.classification_metrics(risk, p, threshold),
            "alerts": alerts(threshold),
            "rul": evaluation.rul_metrics(r, rul),
        }
        if name == "ensemble":
            out[name]["alerts_by_threshold"] = [
                {k: v for k, v in alerts(float(t)).items() if k not in ("leads", "modes")}
                for t in ALERT_THRESHOLDS
            ]
    if profile.name == "cmapss" or profile.time_unit == "cycle":
        out["truncated"] = truncated_rul(predictor, ds, assets, labels, config)
    best_pr = max(out[m]["classification"]["pr_auc"] for m in ("forest", "lstm"))
    best_rmse = min(out[m]["rul"]["rmse"] for m in ("forest", "lstm"))
    out["ensemble_vs_best_single"] = {
        "pr_auc": out["ensemble"]["classification"]["pr_auc"] - best_pr,
        "rul_rmse": out["ensemble"]["rul"]["rmse"] - best_rmse,
        "matches_or_beats": bool(
            out["ensemble"]["classification"]["pr_auc"] >= best_pr - 1e-3
            and out["ensemble"]["rul"]["rmse"] <= best_rmse + 1e-3
        ),
    }
    return out


def operating_point(validation: dict[str, Any], test: dict[str, Any]) -> dict[str, Any]:
    """The ensemble's alert threshold chosen on the validation assets: the highest recall of precursor
    failures >= 24 h (half the horizon) ahead among thresholds whose precursor alert precision is at
    least ``TARGET_PRECISION``, ties to the higher precision; with the test assets' figures there."""
    rows = validation["ensemble"]["alerts_by_threshold"]
    ok = [r for r in rows if r["precursor_alert_precision"] >= TARGET_PRECISION] or rows
    best = max(ok, key=lambda r: (r["precursor_recall_at_min_lead"], r["precursor_alert_precision"]))
    at = best["threshold"]
    return {
        "threshold": at,
        "chosen_on": "validation",
        "target_precision": TARGET_PRECISION,
        "validation": best,
        "test": next(r for r in test["ensemble"]["alerts_by_threshold"] if r["threshold"] == at),
    }


def truncated_rul(
    predictor: Predictor, ds: LabelledLog, assets: tuple[str, ...], labels: LabelConfig, config: TrainConfig
) -> dict[str, Any]:
    """The NASA test protocol on held-out run-to-failure assets: cut each trajectory at a random cycle
    before failure and score the RUL at the cut. True RUL at the cut is drawn uniformly in [7, 145]
    cycles (the range of NASA's FD001 test set) leaving >= 31 observed cycles; ``truncations`` cuts per
    asset, seeded. Reported against the true RUL and against the RUL capped like the training labels."""
    rng = np.random.default_rng(config.seed + 1)
    rows, true = [], []
    for a in assets:
        mine = ds.rows_of([a])
        n = len(mine)
        hi = min(145, n - 31)
        if hi < 7:
            continue
        for r in rng.integers(7, hi + 1, size=config.truncations):
            rows.append(mine[n - 1 - int(r)])
            true.append(float(r))
    if not rows:
        return {}
    rows_a, true_a = np.asarray(rows), np.asarray(true)
    scores = score_rows(predictor, ds.values, ds.asset_id, rows_a)
    capped = np.minimum(true_a, labels.rul_cap)
    return {
        "cuts": len(rows_a),
        **{
            name: {
                "vs_true": evaluation.rul_metrics(r, true_a),
                "vs_capped": evaluation.rul_metrics(r, capped),
            }
            for name, (_, r) in scores.items()
        },
    }


def _plain(obj: Any) -> Any:
    """A profile section (read-only mappings) as plain JSON-able data."""
    if hasattr(obj, "items"):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj
