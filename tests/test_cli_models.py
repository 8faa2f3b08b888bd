"""`motorwatch train` and `motorwatch evaluate` end to end on a small simulated log: a registered version
with its card and `latest`, then an evaluation computed on the version's test assets only."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from models.card import CARD_FILE, sha256_file
from models.registry import LATEST
from motorwatch.cli import main
from simulator.config import FaultRates, FleetConfig
from simulator.writers import simulate_to_files

# Short lives (a failure every few days per motor) and no sensor faults, so every reading is a feature
# row and a 12-day log of 10 motors holds failures in every part of the split.
FLEET = FleetConfig(
    motors=10,
    interval_s=600.0,
    mean_onset_days=3.0,
    degradation_days=1.0,
    faults=FaultRates.none(),
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, CliRunner]:
    root = tmp_path_factory.mktemp("cli_models")
    log, registry = root / "log", root / "registry"
    simulate_to_files(FLEET, 5, log, 12 * 86400.0)
    runner = CliRunner()
    result = runner.invoke(
        main, ["train", "--data", str(log), "--quick", "--seed", "3", "--registry", str(registry)]
    )
    assert result.exit_code == 0, result.output
    assert "registered v0001" in result.output
    return log, registry, runner


def test_train_registers_a_version_with_its_card_and_latest(trained) -> None:
    log, registry, _ = trained
    assert (registry / LATEST).read_text().strip() == "v0001"
    version = registry / "v0001"
    assert {"forest.onnx", "lstm.onnx", "model.json", CARD_FILE} <= {p.name for p in version.iterdir()}
    card = json.loads((version / CARD_FILE).read_text())
    assert card["version"] == "v0001" and card["profile"] == "motor"
    assert card["params"]["seed"] == 3 and card["params"]["forest"]["n_estimators"] == 30  # --quick
    assert card["data_files"] == {str(p): sha256_file(p) for p in sorted(log.iterdir())}
    assert card["training_time_s"] > 0
    split = card["split"]
    assert sorted(split["train"] + split["validation"] + split["test"]) == [f"m{i:05d}" for i in range(1, 11)]
    for model in ("forest", "lstm", "ensemble"):
        assert 0.0 <= card["metrics"][model]["classification"]["pr_auc"] <= 1.0


def test_evaluate_writes_the_metrics_of_the_test_assets_only(trained, tmp_path) -> None:
    log, registry, runner = trained
    out = tmp_path / "evaluation.json"
    result = runner.invoke(main, ["evaluate", "--registry", str(registry), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "v0001: test assets" in result.output and "ensemble" in result.output
    metrics = json.loads(out.read_text())
    # Whether the ensemble is worth it is said, either way, from the same test metrics.
    said = " ".join(result.output.split())  # the table's caption wraps
    matches = metrics["ensemble_vs_best_single"]["matches_or_beats"]
    assert ("the ensemble matches or beats the best single model" in said) == matches
    assert ("the ensemble does NOT match the best single model" in said) == (not matches)
    card = json.loads((registry / "v0001" / CARD_FILE).read_text())
    test = card["split"]["test"]
    readings = pd.read_parquet(log / "readings.parquet", columns=["asset_id"])
    events = pd.read_parquet(log / "events.parquet")
    assert metrics["version"] == "v0001" and metrics["assets"] == len(test)
    assert metrics["rows"] == int(readings["asset_id"].isin(test).sum())
    failures = int(((events["kind"] == "failure") & events["asset_id"].isin(test)).sum())
    assert failures > 0
    chosen = card["metrics"]["operating_point"]  # alert threshold validated at training, applied to test
    assert chosen["chosen_on"] == "validation"
    assert metrics["operating_point"]["threshold"] == chosen["threshold"]
    assert metrics["operating_point"]["test"] == chosen["test"]
    for model in ("forest", "lstm", "ensemble"):
        assert metrics[model]["alerts"]["failures"] == failures
        # the same version on the same log: evaluate reproduces the card's test metrics
        assert metrics[model]["classification"] == pytest.approx(card["metrics"][model]["classification"])
        assert metrics[model]["rul"] == pytest.approx(card["metrics"][model]["rul"])


def test_evaluate_refuses_an_empty_registry_and_another_profile(trained, tmp_path) -> None:
    _, registry, runner = trained
    empty = runner.invoke(main, ["evaluate", "--registry", str(tmp_path / "none")])
    assert empty.exit_code != 0 and "motorwatch train" in empty.output
    other = runner.invoke(main, ["evaluate", "--profile", "cmapss", "--registry", str(registry)])
    assert other.exit_code != 0 and "feature spec" in other.output
