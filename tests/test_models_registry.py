"""Trained models end to end on tiny data: ONNX parity, the Predictor contract, the registry, the card."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from features.spec import FeatureSpec
from ingest.profiles import load_profile
from ingest.schemas import Driver
from models import forest, lstm, synthetic
from models.card import CARD_FILE
from models.dataset import LabelledLog
from models.inference import LSTM_STATE_FILE, LSTM_STEP_FILE, LSTMState, Predictor
from models.registry import LATEST, Registry, SpecMismatchError
from models.sequences import sequence_step, windows
from models.training import TrainConfig, fit

PROFILE = load_profile("cmapss")
SPEC = FeatureSpec.from_profile(PROFILE)
TINY = TrainConfig(
    forest=forest.ForestConfig(n_estimators=5, max_depth=6, n_jobs=1),
    lstm=lstm.LSTMConfig(seq_len=8, units=4, dense=4, epochs=1, batch_size=256),
    truncations=1,
)


def synthetic_log(n_assets: int = 30, seed: int = 0) -> LabelledLog:
    """Run-to-failure C-MAPSS-like engines (see :mod:`models.synthetic`)."""
    return synthetic.synthetic_log(PROFILE, SPEC, n_assets, seed)


@pytest.fixture(scope="module")
def trained():
    ds = synthetic_log()
    return ds, fit(ds, PROFILE, SPEC, TINY, {"synthetic.txt": "0" * 64}, log=lambda *_: None)


def _inputs(ds: LabelledLog, n: int, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    rows = np.arange(n)
    return ds.values[rows], windows(ds.values, ds.asset_id, rows, seq_len)


def test_onnx_forest_agrees_with_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 6)).astype(np.float32)
    cfg = forest.ForestConfig(n_estimators=7, max_depth=5, n_jobs=1)
    clf = forest.fit_classifier(x, (x[:, 0] > 0.3).astype(float), cfg)
    reg = forest.fit_regressor(x, 50 + 10 * x[:, 1], cfg)
    p, r = ort.InferenceSession(forest.to_onnx(clf, reg, 6)).run(None, {"x": x})
    np.testing.assert_allclose(p, clf.predict_proba(x)[:, 1], atol=1e-5)
    np.testing.assert_allclose(r, reg.predict(x), rtol=1e-5, atol=1e-3)


def test_onnx_lstm_agrees_with_keras(trained) -> None:
    """The exported graph (centring, then the scaling folded into the LSTM's input weights) computes what
    Keras does with the trained weights."""
    ds, result = trained
    weights = result.fitted["lstm_weights"]
    model = lstm.keras_model(weights, TINY.lstm)
    last, seq = _inputs(ds, 50, TINY.lstm.seq_len)
    seq = np.nan_to_num(seq)
    out = model(seq, training=False)
    p, r = Predictor(result.bundle).components(last, seq)["lstm"]
    np.testing.assert_allclose(p, np.asarray(out["p"])[:, 0], atol=1e-5)
    np.testing.assert_allclose(r, np.asarray(out["rul"])[:, 0] * weights.rul_cap, rtol=1e-4, atol=1e-3)


def test_onnx_lstm_keeps_keras_precision_where_offsets_dwarf_spreads() -> None:
    """Real C-MAPSS sensors sit ~25,000 spreads from zero (sensor_8 ~2388 +- 0.07): folding the mean
    into the input weights cancels catastrophically in float32 there (0.7 cycles of RUL error on
    FD001); the export must stay as close to Keras as on friendly data."""
    rng = np.random.default_rng(5)
    f, units, dense, cap = 6, 8, 4, 125.0
    config = lstm.LSTMConfig(seq_len=5, units=units, dense=dense)
    mean = np.array([2388.0, 9050.0, 1.0, 0.0, 47.5, 553.0], dtype=np.float32)
    scale = np.array([0.07, 0.1, 1.0, 1.0, 0.2, 0.9], dtype=np.float32)

    def normal(*shape, sd=0.4):
        return rng.normal(0.0, sd, shape).astype(np.float32)

    weights = lstm.LSTMWeights(
        mean, scale, normal(f, 4 * units), normal(units, 4 * units), normal(4 * units),
        normal(units, dense), normal(dense), normal(dense, 1), normal(1), normal(dense, 1), normal(1), cap,
    )  # fmt: skip
    seq = (mean + 3 * scale * rng.standard_normal((300, config.seq_len, f))).astype(np.float32)
    out = lstm.keras_model(weights, config)(seq, training=False)
    p, r = ort.InferenceSession(lstm.to_onnx(weights, config.seq_len)).run(None, {"seq": seq})
    np.testing.assert_allclose(p, np.asarray(out["p"])[:, 0], atol=1e-5)
    np.testing.assert_allclose(r, np.asarray(out["rul"])[:, 0] * cap, atol=1e-3)


def test_predictor_contract_shapes_ranges_and_batch_of_one(trained) -> None:
    ds, result = trained
    pred = Predictor(result.bundle, version="v0042")
    assert pred.version == "v0042" and pred.feature_names == SPEC.names and pred.seq_len == 8
    assert pred.rul_unit == "cycle"
    last, seq = _inputs(ds, 300, pred.seq_len)
    out = pred.predict(last, seq)
    assert out.risk.shape == (300,) and out.rul.shape == (300,)
    assert np.all((out.risk >= 0) & (out.risk <= 1)) and np.all((out.rul >= 0) & (out.rul <= 125))
    assert np.isfinite(out.risk).all()  # NaN features are imputed, never propagated
    one = pred.predict(last[5:6], seq[5:6])
    assert one.risk[0] == pytest.approx(out.risk[5], abs=1e-6)
    assert pred.predict(last[:0], seq[:0]).risk.shape == (0,)
    with pytest.raises(ValueError, match="expected last"):
        pred.predict(last, seq[:, :3])


@pytest.mark.parametrize("threads", [1, 2])
def test_one_lstm_step_from_a_remembered_state_scores_the_same_bits_as_the_whole_sequence(
    trained, threads
) -> None:
    """What the scorer relies on when it serves an asset's next rows from the LSTM state of its
    history: the state after the first T - 1 vectors, then one step on the row, is the full run."""
    ds, result = trained
    pred = Predictor(result.bundle, threads=threads)
    last, seq = _inputs(ds, 600, pred.seq_len)
    full = pred.predict(last, seq)
    assert full.state is not None and full.state.h.shape == (600, pred.state_size)
    step = pred.predict_step(last, full.state)
    assert np.array_equal(step.risk, full.risk) and np.array_equal(step.rul, full.rul)
    # The state carries the history: other rows' states give other risks (this tiny ensemble's
    # RUL is all forest, its risk 10 % LSTM).
    rolled = pred.predict_step(last, LSTMState(np.roll(full.state.h, 1, 0), np.roll(full.state.c, 1, 0)))
    assert not np.array_equal(rolled.risk, full.risk)
    with pytest.raises(ValueError, match="expected states"):
        pred.predict_step(last[:3], full.state)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_batch_begun_then_split_between_sequences_and_steps_scores_the_same_bits(trained, threads) -> None:
    """What the scorer does with a batch: the forest starts on every row (Predictor.begin), then
    some rows run their whole sequence and the others one step from a known state."""
    ds, result = trained
    pred = Predictor(result.bundle, threads=threads)
    last, seq = _inputs(ds, 600, pred.seq_len)
    full = pred.predict(last, seq)
    assert full.state is not None
    rows = np.random.default_rng(3).permutation(600)
    lead, step = np.sort(rows[:250]), np.sort(rows[250:])
    run = pred.begin(last)
    state = run.sequences(lead, seq[lead])
    run.steps(step, LSTMState(full.state.h[step], full.state.c[step]))
    risk, rul = run.result()
    assert np.array_equal(risk, full.risk) and np.array_equal(rul, full.rul)
    assert np.array_equal(state.h, full.state.h[lead]) and np.array_equal(state.c, full.state.c[lead])
    backwards = pred.begin(last)  # rows given as any slice land where they belong
    backwards.sequences(slice(None, None, -1), seq[::-1])
    assert np.array_equal(backwards.result()[0], full.risk)
    unfinished = pred.begin(last)
    unfinished.sequences(lead, seq[lead])
    with pytest.raises(ValueError, match="350 of 600 rows have had no LSTM"):
        unfinished.result()


def test_risk_rises_towards_failure(trained) -> None:
    ds, result = trained
    pred = Predictor(result.bundle)
    rows = np.flatnonzero(np.isin(ds.asset_id, np.array(result.split.test, dtype=object)))
    out = pred.predict(ds.values[rows], windows(ds.values, ds.asset_id, rows, pred.seq_len))
    p = ds.labels.p_fail[rows]
    assert out.risk[p == 1].mean() > out.risk[p == 0].mean() + 0.2
    assert out.rul[p == 1].mean() < out.rul[p == 0].mean()


def test_drivers_name_the_important_feature_that_moved_from_its_baseline(trained) -> None:
    _, result = trained
    b = result.bundle
    pred = Predictor(b)
    top = int(np.argmax(b.importance))
    x = b.baseline.copy()[None].astype(np.float32)
    x[0, top] += 10 * b.scale[top]
    drivers = pred.drivers(np.vstack([x, b.baseline[None]]), k=3)
    assert len(drivers) == 2 and all(len(d) == 3 and isinstance(d[0], Driver) for d in drivers)
    first = drivers[0][0]
    assert first.feature == SPEC.names[top] and first.baseline == pytest.approx(b.baseline[top])
    assert first.value == pytest.approx(x[0, top], rel=1e-5) and first.contribution > 0


def test_registry_versions_latest_and_reload(tmp_path: Path, trained) -> None:
    ds, result = trained
    reg = Registry(tmp_path / "reg")
    assert reg.versions() == [] and reg.latest_version() is None
    assert reg.save(result.bundle, result.card) == "v0001"
    assert reg.save(result.bundle, result.card) == "v0002"
    assert reg.versions() == ["v0001", "v0002"] and reg.latest_version() == "v0002"
    assert (tmp_path / "reg" / LATEST).read_text().strip() == "v0002"
    assert not [p for p in (tmp_path / "reg").iterdir() if p.name.startswith(".")]  # no temp left behind
    loaded = reg.load(spec=SPEC)
    assert loaded.version == "v0002"
    # The training log's cadence, which the scorer keeps its sequences at.
    assert loaded.seq_step == result.bundle.seq_step == sequence_step(ds.asset_id, ds.ts) > 0
    last, seq = _inputs(ds, 64, loaded.seq_len)
    np.testing.assert_allclose(
        loaded.predict(last, seq).risk, Predictor(result.bundle).predict(last, seq).risk
    )
    assert reg.load("v0001").version == "v0001"
    with pytest.raises(FileNotFoundError):
        reg.load("v0099")


def test_serving_a_version_imports_neither_onnx_nor_the_training_libraries(tmp_path: Path, trained) -> None:
    """A scorer starts on onnxruntime and numpy: importing onnx alone costs 0.7 s on every start."""
    _, result = trained
    Registry(tmp_path).save(result.bundle, result.card)
    code = (
        "import sys, numpy as np; from models.registry import Registry\n"
        f"p = Registry({str(tmp_path)!r}).load()\n"
        "x = np.zeros((2, len(p.feature_names)), np.float32)\n"
        "p.predict(x, np.repeat(x[:, None], p.seq_len, axis=1))\n"
        "print(sorted(m for m in ('onnx', 'tensorflow', 'sklearn', 'keras') if m in sys.modules))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert (run.returncode, run.stdout) == (0, "[]\n"), run.stderr


def test_a_version_saved_without_the_split_lstm_graphs_derives_them_on_load(tmp_path: Path, trained) -> None:
    ds, result = trained
    reg = Registry(tmp_path)
    reg.save(result.bundle, result.card)
    for name in (LSTM_STATE_FILE, LSTM_STEP_FILE):  # as versions saved before they were
        (reg.path("v0001") / name).unlink()
    loaded = reg.load()
    last, seq = _inputs(ds, 64, loaded.seq_len)
    np.testing.assert_array_equal(
        loaded.predict(last, seq).risk, Predictor(result.bundle).predict(last, seq).risk
    )


def test_registry_refuses_a_different_feature_spec(tmp_path: Path, trained) -> None:
    _, result = trained
    reg = Registry(tmp_path)
    reg.save(result.bundle, result.card)
    other = FeatureSpec.from_profile(load_profile("motor"))
    with pytest.raises(SpecMismatchError, match="feature spec"):
        reg.load(spec=other)


def test_a_failed_save_leaves_no_version_and_keeps_latest(tmp_path: Path, trained) -> None:
    _, result = trained
    reg = Registry(tmp_path)
    reg.save(result.bundle, result.card)
    broken = result.bundle.__class__(**{**result.bundle.__dict__, "blend": None})
    with pytest.raises(ValueError, match="blend"):
        reg.save(broken, result.card)
    assert reg.versions() == ["v0001"] and reg.latest_version() == "v0001"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_model_card_records_what_the_brief_asks(tmp_path: Path, trained) -> None:
    _, result = trained
    reg = Registry(tmp_path)
    v = reg.save(result.bundle, result.card)
    card = json.loads((tmp_path / v / CARD_FILE).read_text())
    assert card["version"] == v and card["profile"] == "cmapss"
    assert card["fingerprint"] == SPEC.fingerprint() and card["feature_spec"]["names"] == list(SPEC.names)
    assert card["data_files"] == {"synthetic.txt": "0" * 64}
    assert {"tensorflow", "scikit-learn", "onnxruntime", "numpy"} <= set(card["libraries"])
    assert card["training_time_s"] > 0
    assert card["params"]["forest"]["n_estimators"] == 5 and card["params"]["labels"]["rul_cap"] == 125.0
    split = card["split"]
    assert set(split["train"]).isdisjoint(split["test"]) and set(split["validation"]).isdisjoint(
        split["test"]
    )
    assert len(split["train"]) + len(split["validation"]) + len(split["test"]) == 30
    test = card["metrics"]
    for model in ("forest", "lstm", "ensemble"):
        assert {"pr_auc", "roc_auc", "brier", "precision", "recall", "f1"} <= set(
            test[model]["classification"]
        )
        assert {"rmse", "mae", "nasa_score"} <= set(test[model]["rul"])
        assert "lead_quantiles" in test[model]["alerts"]
    assert (
        test["truncated"]["cuts"] == len(split["test"])
        and "matches_or_beats" in test["ensemble_vs_best_single"]
    )
