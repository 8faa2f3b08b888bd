"""Labels, splits, sequences, calibration and metrics: the parts of models/ with no trained network."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ingest.profiles import load_profile, parse_profile
from models import forest
from models.ensemble import Calibrator, fit_blend
from models.evaluation import alert_events, classification_metrics, nasa_score, rul_metrics
from models.forest import ForestConfig
from models.labels import LabelConfig, make_labels
from models.sequences import windows
from models.splits import split_assets
from models.training import TrainConfig

H = 48 * 3600.0  # the motor profile's horizon
MOTOR = LabelConfig(horizon=H, rul_cap=336.0, time_per_rul=3600.0)


def _events(*rows: tuple[str, float, str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["asset_id", "ts", "kind"])


def test_profiles_carry_the_label_horizons_of_the_brief() -> None:
    assert LabelConfig.from_profile(load_profile("motor")) == LabelConfig(172800.0, 336.0, 3600.0)
    assert LabelConfig.from_profile(load_profile("cmapss")) == LabelConfig(30.0, 125.0, 1.0)


def test_profiles_size_their_models_and_a_typo_in_model_sizes_is_refused() -> None:
    motor = TrainConfig.for_profile(load_profile("motor"), seed=3)
    assert motor.forest.n_estimators == 40 and motor.forest.max_depth == ForestConfig().max_depth
    assert motor.seed == motor.forest.seed == motor.lstm.seed == 3  # --seed reaches the models too
    cmapss = TrainConfig.for_profile(load_profile("cmapss")).forest
    assert cmapss == ForestConfig(max_depth=0, min_samples_leaf=2)
    assert forest._params(cmapss, rows=1000)["max_depth"] is None  # 0 (TOML has no null): unbounded
    raw = tomllib.loads(Path(load_profile("motor").source).read_text())
    raw["model"] = {"forest": {"n_trees": 10}}
    with pytest.raises(ValueError, match=r"\[model\].*n_trees"):
        TrainConfig.for_profile(parse_profile(raw))
    raw["model"] = {"gbm": {}}
    with pytest.raises(ValueError, match="unknown tables"):
        TrainConfig.for_profile(parse_profile(raw))


def test_labels_switch_to_failure_exactly_at_the_horizon_and_rul_counts_down_in_hours() -> None:
    fail = 10 * 86400.0
    ts = fail - np.array([H + 3600, H + 1, H, H - 1, 3600, 0.0])
    y = make_labels(["m1"] * len(ts), ts, _events(("m1", fail, "failure")), MOTOR)
    assert y.p_fail.tolist() == [0, 0, 1, 1, 1, 1]
    np.testing.assert_allclose(y.rul, [49, (H + 1) / 3600, 48, (H - 1) / 3600, 1, 0])


def test_rul_is_capped_far_from_failure() -> None:
    fail = 100 * 86400.0
    y = make_labels(["m1"], [0.0], _events(("m1", fail, "failure")), MOTOR)
    assert y.rul.tolist() == [336.0] and y.p_fail.tolist() == [0.0]


def test_censored_asset_is_unknown_within_the_horizon_of_its_log_end_not_healthy() -> None:
    end = 30 * 86400.0
    ts = np.array([0.0, end - H - 1, end - H + 1, end - 60])
    y = make_labels(["m2"] * 4, ts, _events(), MOTOR, log_end={"m2": end})
    assert y.p_fail[:2].tolist() == [0.0, 0.0]
    assert np.isnan(y.p_fail[2:]).all()
    # RUL: only a lower bound is known; it is the cap when the log runs on for longer than the cap.
    assert y.rul[0] == 336.0 and np.isnan(y.rul[1:]).all()


def test_maintenance_censors_the_episode_and_the_next_failure_starts_a_new_one() -> None:
    maint, fail = 20 * 86400.0, 40 * 86400.0
    ev = _events(("m3", maint, "maintenance"), ("m3", fail, "failure"))
    ts = np.array([maint - 3600, maint + 3600, fail - 3600])
    y = make_labels(["m3"] * 3, ts, ev, MOTOR, log_end={"m3": fail})
    assert np.isnan(y.p_fail[0])  # would it have failed? unknown: maintenance intervened
    assert y.p_fail[1:].tolist() == [0.0, 1.0]
    assert y.rul[2] == pytest.approx(1.0)


def test_labels_of_one_asset_ignore_other_assets_failures() -> None:
    y = make_labels(["a", "b"], [0.0, 0.0], _events(("a", 3600.0, "failure")), MOTOR, {"a": 3600.0, "b": 1e7})
    assert y.p_fail.tolist() == [1.0, 0.0]


def test_splits_are_disjoint_complete_seeded_and_sized_70_15_15() -> None:
    ids = [f"m{i:05d}" for i in range(200)]
    s = split_assets(ids * 3, seed=11)  # repeated rows of the same assets: split by asset, not row
    parts = [set(s.train), set(s.validation), set(s.test)]
    assert [len(p) for p in parts] == [140, 30, 30]
    assert parts[0].isdisjoint(parts[1]) and parts[0].isdisjoint(parts[2]) and parts[1].isdisjoint(parts[2])
    assert set().union(*parts) == set(ids)
    assert split_assets(ids, seed=11) == s
    assert split_assets(ids, seed=12).test != s.test


def test_windows_are_left_padded_with_the_assets_first_vector_and_never_cross_assets() -> None:
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    aid = np.array(["a", "a", "a", "a", "b", "b"])
    w = windows(x, aid, np.arange(6), seq_len=3)
    assert w.shape == (6, 3, 2)
    assert w[0, :, 0].tolist() == [0, 0, 0]
    assert w[3, :, 0].tolist() == [2, 4, 6]
    assert w[4, :, 0].tolist() == [8, 8, 8]  # b's first row: padded with b's vector, not a's


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_calibration_is_monotone_and_calibrated(method: str) -> None:
    rng = np.random.default_rng(0)
    raw = rng.uniform(size=20_000)
    y = (rng.uniform(size=raw.size) < raw**3).astype(float)  # raw over-states risk
    c = Calibrator.fit(raw, y, method)
    grid = np.linspace(0, 1, 1001)
    assert np.all(np.diff(c.apply(grid)) >= 0)
    cal = c.apply(raw)
    for lo in (0.1, 0.4, 0.7):  # observed failure rate within a bin of calibrated risk ~ the risk
        sel = (cal >= lo) & (cal < lo + 0.1)
        assert abs(y[sel].mean() - cal[sel].mean()) < 0.05


def test_blend_prefers_the_informative_model_and_clips_rul() -> None:
    rng = np.random.default_rng(1)
    y = (rng.uniform(size=5000) < 0.2).astype(float)
    good = np.clip(y * 0.6 + rng.uniform(0, 0.4, y.size), 0, 1)
    noise = rng.uniform(size=y.size)
    rul_true = rng.uniform(0, 100, y.size)
    b = fit_blend(
        good, noise, y, rul_true + rng.normal(0, 1, y.size), rng.uniform(0, 100, y.size), rul_true, 90
    )
    assert b.risk_weight >= 0.9 and b.rul_weight >= 0.9
    assert b.rul(np.array([150.0]), np.array([150.0])).tolist() == [90.0]


def test_blend_without_a_known_rul_on_validation_weighs_the_rul_models_evenly() -> None:
    """A small validation set may hold no failure (every RUL censored): no weight can be judged, and
    the grid search would have picked its first entry (the LSTM alone) from all-NaN errors."""
    rng = np.random.default_rng(2)
    y = (rng.uniform(size=500) < 0.2).astype(float)
    p = np.clip(y * 0.6 + rng.uniform(0, 0.4, y.size), 0, 1)
    unknown = np.full(y.size, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "mean of empty slice" on the way
        b = fit_blend(p, p, y, rng.uniform(0, 90, y.size), rng.uniform(0, 90, y.size), unknown, 90)
    assert b.rul_weight == 0.5 and b.rul(np.array([10.0]), np.array([30.0])).tolist() == [20.0]


def test_rul_metrics_and_the_asymmetric_nasa_score() -> None:
    m = rul_metrics(np.array([13.0, 0.0, np.nan]), np.array([0.0, 10.0, np.nan]))
    assert m["n"] == 2 and m["mae"] == pytest.approx(11.5)
    assert m["rmse"] == pytest.approx(np.sqrt((169 + 100) / 2))
    # late by 13 costs more than early by 13
    assert nasa_score(np.array([13.0]), np.array([0.0])) > nasa_score(np.array([0.0]), np.array([13.0]))


def test_classification_metrics_skip_unknown_labels() -> None:
    m = classification_metrics(np.array([0.9, 0.2, 0.8, 0.1, 0.99]), np.array([1, 0, 0, 1, np.nan]), 0.5)
    assert (m["precision"], m["recall"], m["n"], m["positives"]) == (0.5, 0.5, 4, 2)


def test_alert_lead_time_is_measured_from_the_first_raise_before_each_failure() -> None:
    h = 3600.0
    ts = np.arange(0, 100) * h
    aid = np.array(["m1"] * 100)
    risk = np.zeros(100)
    risk[60:70] = 0.9  # raised at 60 h, failure at 90 h -> lead 30 h
    risk[20:22] = 0.9  # a false alarm long before the lookback window
    ev = pd.DataFrame({"asset_id": ["m1"], "ts": [90 * h], "kind": ["failure"], "mode": ["bearing"]})
    out = alert_events(aid, ts, risk, ev, 0.5, horizon=48 * h, min_lead=24 * h, lookback=48 * h)
    assert out["leads"] == [30 * h] and out["recall_at_min_lead"] == 1.0
    assert out["alerts_raised"] == 2 and out["alert_precision"] == 0.5


def test_precursor_view_counts_alerts_during_a_real_precursor_and_skips_sudden_failures() -> None:
    h = 3600.0
    ts = np.arange(0, 200) * h
    aid = np.array(["m1"] * 100 + ["m2"] * 100)
    risk = np.zeros(200)
    risk[10:90] = 0.9  # m1: raised at 10 h, 90 h before its failure, while its precursor (from 5 h) grows
    risk[170:172] = 0.9  # m2: a false alarm after its failure, no precursor under way
    ev = pd.DataFrame(
        {
            "asset_id": ["m1", "m1", "m2"],
            "ts": [5 * h, 100 * h, 60 * h],  # m2's failure at 60 h local time is sudden: no onset
            "kind": ["onset", "failure", "failure"],
            "mode": ["bearing", "bearing", "sudden"],
        }
    )
    ts[100:] = np.arange(0, 100) * h
    out = alert_events(aid, ts, risk, ev, 0.5, horizon=48 * h, min_lead=24 * h, lookback=100 * h)
    assert out["failures"] == 2 and out["precursor_failures"] == 1
    assert out["recall_at_min_lead"] == 0.5 and out["precursor_recall_at_min_lead"] == 1.0
    assert out["alert_precision"] == 0.0  # neither raise is followed by a failure within 48 h
    assert out["precursor_alert_precision"] == 0.5  # m1's raise came during a real precursor


def test_tensorflow_imports_without_its_cpu_only_start_up_noise_and_fails_loud(tmp_path) -> None:
    """The demo's first run trains with TensorFlow: a new user must not see 'failed call to cuInit'."""
    code = "from models.lstm import tensorflow; print(tensorflow().constant(2).numpy())"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "2\n", "")
    # A broken TensorFlow: what it printed natively and its error are both shown.
    fake = tmp_path / "tensorflow"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "import os\nos.write(2, b'native: libfoo.so missing\\n')\nraise ImportError('broken')\n"
    )
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    broken = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert broken.returncode == 1
    assert "native: libfoo.so missing" in broken.stderr and "ImportError: broken" in broken.stderr
