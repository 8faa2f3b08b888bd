"""Evaluate a registered version on its test assets, and render metrics as a rich table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from features.spec import FeatureSpec
from ingest.profiles import Profile
from models.dataset import load
from models.labels import LabelConfig
from models.registry import Registry
from models.training import TrainConfig, assess

MODELS = ("forest", "lstm", "ensemble")


def evaluate_version(
    registry: Registry, profile: Profile, spec: FeatureSpec, data: Path | None, version: str | None
) -> tuple[dict[str, Any], str]:
    """Metrics of ``version`` (default latest) on the test assets recorded in its card."""
    predictor = registry.load(version, spec)
    card = registry.card(predictor.version)
    if card.profile != profile.name:
        raise ValueError(
            f"model {predictor.version} was trained on profile {card.profile}, not {profile.name}"
        )
    if data is None:
        files = list(card.data_files)
        if not files:
            raise ValueError("the model card names no data file: pass --data")
        data = Path(files[0]) if len(files) == 1 else Path(files[0]).parent
    labels = LabelConfig.from_profile(profile)
    ds = load(data, profile, spec, labels)
    config = TrainConfig(
        seed=int(card.params["seed"]),
        truncations=int(card.params["truncations"]),
        max_eval_rows=int(card.params["max_eval_rows"]),
    )
    metrics = assess(predictor, ds, tuple(card.split["test"]), profile, labels, config)
    chosen = card.metrics.get("operating_point")
    if chosen:  # the alert threshold validated at training time, applied to these test rows
        rows = metrics["ensemble"]["alerts_by_threshold"]
        test = next((r for r in rows if r["threshold"] == chosen["threshold"]), None)
        metrics["operating_point"] = chosen | {"test": test}
    return metrics | {"version": predictor.version, "data": str(data)}, predictor.version


def metrics_table(metrics: dict[str, Any], title: str):
    """One column per model, one row per metric (fits an 80-column terminal): classification at 0.5,
    alerts at the profile's threshold with the median lead before failure, RUL error."""
    from rich.table import Table

    hours = metrics.get("time_unit", "s") == "s"
    lead_unit = "h" if hours else metrics.get("time_unit", "")

    def lead(m: dict[str, Any]) -> str:
        q = m["alerts"]["lead_quantiles"]
        v = q.get(50, q.get("50"))
        return "-" if v is None else f"{v / 3600 if hours else v:.1f}"

    rows: list[tuple[str, Any]] = [
        ("precision", lambda m: f"{m['classification']['precision']:.3f}"),
        ("recall", lambda m: f"{m['classification']['recall']:.3f}"),
        ("F1", lambda m: f"{m['classification']['f1']:.3f}"),
        ("PR-AUC", lambda m: f"{m['classification']['pr_auc']:.3f}"),
        ("ROC-AUC", lambda m: f"{m['classification']['roc_auc']:.3f}"),
        ("Brier", lambda m: f"{m['classification']['brier']:.4f}"),
        ("failures alerted in time", lambda m: f"{m['alerts']['recall_at_min_lead']:.2f}"),
        ("alert precision", lambda m: f"{m['alerts']['alert_precision']:.2f}"),
        (f"alert lead p50 ({lead_unit})", lead),
        ("RUL RMSE", lambda m: f"{m['rul']['rmse']:.2f}"),
        ("RUL MAE", lambda m: f"{m['rul']['mae']:.2f}"),
        ("NASA score", lambda m: f"{m['rul']['nasa_score']:.4g}"),
    ]
    trunc = metrics.get("truncated") or {}
    table = Table("metric", title=title)
    for m in MODELS:
        table.add_column(m, justify="right")
    for name, cell in rows:
        table.add_row(name, *(cell(metrics[m]) for m in MODELS))
    op = metrics.get("operating_point") or {}
    if op.get("test"):
        t = op["test"]
        blank = ("",) * (len(MODELS) - 1)
        table.add_row(
            f"precursor recall >= {t['min_lead'] / 3600 if hours else t['min_lead']:g} {lead_unit} ahead "
            f"@ risk {op['threshold']:g}",
            *blank,
            f"{t['precursor_recall_at_min_lead']:.2f}",
        )
        precision = f"{t['precursor_alert_precision']:.2f}"
        table.add_row(f"precursor precision @ risk {op['threshold']:g}", *blank, precision)
    if trunc:
        table.add_row(
            f"RUL RMSE at {trunc['cuts']} cuts", *(f"{trunc[m]['vs_true']['rmse']:.2f}" for m in MODELS)
        )
    table.caption = verdict(metrics)
    return table


def verdict(metrics: dict[str, Any]) -> str:
    """Whether the ensemble matches or beats the best single model (PR-AUC and RUL RMSE), said plainly."""
    vs = metrics.get("ensemble_vs_best_single")
    if not vs:
        return ""
    deltas = f"PR-AUC {vs['pr_auc']:+.3f}, RUL RMSE {vs['rul_rmse']:+.2f}"
    if vs["matches_or_beats"]:
        return f"the ensemble matches or beats the best single model ({deltas})"
    return f"the ensemble does NOT match the best single model here ({deltas})"
