"""Offline scoring (`motorwatch replay LOG --out scores.csv`): a back-test of real C-MAPSS engines.

A tiny model is trained on some engines of the FD001 training log; other engines, cut before their
failure as in the NASA test protocol, are replayed through features and scoring in one process.
"""

from __future__ import annotations

import gc
import multiprocessing
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from datasets import CMAPSS_FD001
from test_models_registry import TINY

import features.worker
import ingest.profiles
import scoring.worker
from features.spec import FeatureSpec
from ingest.profiles import load_profile
from ingest.schemas import ScoreBlock
from models.registry import Registry
from models.training import train
from motorwatch.cli import main
from motorwatch.offline import COLUMNS, _table, score_logs
from motorwatch.pipeline import NoModelError, Rounds
from scoring.worker import ModelUnavailable

CMAPSS = load_profile("cmapss")


def _engines(units: range) -> pd.DataFrame:
    log = pd.read_csv(CMAPSS_FD001, sep=r"\s+", header=None)
    return log[log[0].isin(units)]


def _write(frame: pd.DataFrame, path: Path) -> Path:
    path.write_text("\n".join(" ".join(f"{v:g}" for v in row) for row in frame.to_numpy()) + "\n")
    return path


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("offline")
    data = _write(_engines(range(1, 31)), root / "train.txt")
    result = train(data, CMAPSS, FeatureSpec.from_profile(CMAPSS), TINY, log=lambda *_: None)
    Registry(root / "registry").save(result.bundle, result.card)
    return root / "registry"


@pytest.fixture(scope="module")
def unseen(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """Engines 81..86, each cut at a random cycle before its failure."""
    rng = np.random.default_rng(5)
    parts = []
    for _, engine in _engines(range(81, 87)).groupby(0):
        parts.append(engine.iloc[: int(rng.integers(40, len(engine) - 5))])
    frame = pd.concat(parts)
    return _write(frame, tmp_path_factory.mktemp("unseen") / "test.txt"), frame


def test_every_reading_is_scored_and_each_engine_ends_with_its_rul(registry, unseen, tmp_path) -> None:
    log, frame = unseen
    out = tmp_path / "scores.csv"
    result = score_logs([log], CMAPSS, registry, out, fmt="cmapss", progress=False)
    scores = pd.read_csv(out, dtype={"asset_id": str}, keep_default_na=False)
    assert tuple(scores.columns) == COLUMNS
    assert result.replay.published == len(frame) == len(scores) == result.scores
    assert result.dead_letters == {}
    last = scores.groupby("asset_id")["ts"].max()
    truth = frame.groupby(0)[1].max()
    assert last.to_dict() == {str(u): float(c) for u, c in truth.items()}
    final = scores.loc[scores.groupby("asset_id")["ts"].idxmax()]
    assert np.isfinite(final["rul"]).all() and (final["rul"] >= 0).all()
    assert (final["model_version"] == "v0001").all()
    assert scores["risk"].between(0, 1).all()
    key = list(zip(scores["ts"], scores["asset_id"], strict=True))
    assert key == sorted(key)
    active = scores["alert_state"] == "active"
    assert set(scores.loc[active, "priority"]) <= {"low", "medium", "high"}
    assert (scores.loc[~active, "priority"] == "").all() and set(scores["alert_state"]) <= {"active", "none"}


def test_each_score_row_shows_its_assets_alert_after_that_score() -> None:
    """The output's alert columns: the asset's latest alert at or before the score (an alert raised
    by a score carries its ts), active while raised or updated, with that alert's priority."""
    rul = np.ones(3)
    scores = [  # as the scorer hands them over: in stream order, ids sorting as text
        ScoreBlock(["m2", "m10", "m10"], np.array([1.0, 1.0, 2.0]), np.zeros(3), rul, "h", "v0002"),
        ScoreBlock(["m2", "m2", "m10"], np.array([2.0, 3.0, 3.0]), np.full(3, 0.5), rul, "h", "v0002"),
    ]
    alerts = [("m10", 2.0, "raised", "medium"), ("m2", 1.0, "raised", "low")]
    alerts += [("m2", 2.0, "updated", "high"), ("m10", 3.0, "cleared", "medium")]
    table = _table(scores, alerts)
    assert tuple(table.columns) == COLUMNS
    rows = table[["asset_id", "ts", "alert_state", "priority", "model_version"]].to_numpy().tolist()
    assert rows == [
        ["m10", 1.0, "none", "", "v0002"],
        ["m2", 1.0, "active", "low", "v0002"],
        ["m10", 2.0, "active", "medium", "v0002"],
        ["m2", 2.0, "active", "high", "v0002"],
        ["m10", 3.0, "none", "", "v0002"],
        ["m2", 3.0, "active", "high", "v0002"],
    ]
    assert table["risk"].tolist() == [0.0, 0.0, 0.0, 0.5, 0.5, 0.5]


def test_output_is_byte_identical_whatever_the_batch_size_and_format(registry, unseen, tmp_path) -> None:
    log, _ = unseen
    score_logs([log], CMAPSS, registry, tmp_path / "a.csv", fmt="cmapss", progress=False)
    score_logs([log], CMAPSS, registry, tmp_path / "b.csv", fmt="cmapss", send_rows=7, progress=False)
    score_logs([log], CMAPSS, registry, tmp_path / "c.parquet", fmt="cmapss", send_rows=100, progress=False)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    # The same values: a number prints in its shortest exact form (a cycle as 31, not 31.0).
    from_csv = pd.read_csv(tmp_path / "a.csv", dtype={"asset_id": str, "ts": float}, keep_default_na=False)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "c.parquet"), from_csv, check_exact=True)


def test_a_log_that_raises_no_alert_is_scored(registry, tmp_path) -> None:
    """A back-test of a quiet day: no alert to join the scores with, every row ``none``."""
    frame = pd.concat(engine.head(2) for _, engine in _engines(range(81, 84)).groupby(0))
    out = tmp_path / "quiet.csv"
    result = score_logs(
        [_write(frame, tmp_path / "quiet.txt")], CMAPSS, registry, out, fmt="cmapss", progress=False
    )
    scores = pd.read_csv(out, keep_default_na=False)
    assert result.alerts == 0 and len(scores) == len(frame) == 6
    assert set(scores["alert_state"]) == {"none"} and set(scores["priority"]) == {""}


def test_cli_reports_bad_rows_by_line_and_scores_the_rest(registry, unseen, tmp_path) -> None:
    log, frame = unseen
    lines = log.read_text().splitlines()
    lines.insert(10, "81 oops 1 2 3")
    bad = tmp_path / "bad.txt"
    bad.write_text("\n".join(lines) + "\n")
    out = tmp_path / "scores.csv"
    args = ["replay", str(bad), "--format", "cmapss", "--profile", "cmapss", "--out", str(out)]
    for workers in ("1", "3"):  # every process reads every row; one reports it
        result = CliRunner().invoke(main, [*args, "--registry", str(registry), "--workers", workers])
        assert result.exit_code == 0, result.output
        assert result.output.count(f"{bad}:11") == 1
        assert f"scored {len(frame)} readings into {len(frame)} scores" in result.output
        assert "skipped rows: unparseable 1;" in result.output
        assert len(pd.read_csv(out)) == len(frame)


def test_an_empty_registry_is_a_clear_error(unseen, tmp_path) -> None:
    log, _ = unseen
    with pytest.raises(NoModelError, match="motorwatch train"):
        score_logs([log], CMAPSS, tmp_path / "empty", tmp_path / "s.csv", fmt="cmapss", progress=False)
    assert not (tmp_path / "s.csv").exists()


def test_columns_handed_over_between_the_stages_score_as_json_would(
    demo_registry, tmp_path, monkeypatch
) -> None:
    """In one process the replay hands the feature worker its readings, and the feature worker the
    scorer its vectors, as columns, not JSON. The output must be exactly what JSON between the
    stages (a Kafka deployment) gives, on a motor log with sensor faults, failures and repairs:
    undefined features, stale markers and alerts included. (Dead letters of handed-over readings:
    tests/test_features_worker.py.)"""
    from demo_model import MOTOR
    from prometheus_client import REGISTRY

    from simulator.config import FleetConfig
    from simulator.writers import simulate_to_files

    log = tmp_path / "log"
    simulate_to_files(FleetConfig(motors=12, interval_s=60.0, mean_onset_days=1.0), 3, log, 4 * 86_400.0)

    def stale_markers() -> float:
        return REGISTRY.get_sample_value("motorwatch_features_emitted_total", {"kind": "stale"}) or 0.0

    handed_over: dict[str, list[int]] = {"readings": [], "vectors": []}

    def spy(module, name: str, what: str) -> None:
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a: handed_over[what].append(len(a[0])) or real(*a))

    spy(scoring.worker, "_from_blocks", "vectors")
    spy(features.worker, "decode_reading_rows", "readings")
    before = stale_markers()
    runs = {
        as_json: score_logs(
            [log],
            MOTOR,
            demo_registry,
            tmp_path / f"{as_json}.csv",
            progress=False,
            json_between_stages=as_json,
            workers=1,  # the spies count in this process
        )
        for as_json in (False, True)
    }
    assert stale_markers() - before >= 2 and runs[False].alerts > 0
    # The columns run did not fall back to JSON.
    assert sum(handed_over["readings"]) == runs[False].replay.published
    assert sum(handed_over["vectors"]) >= runs[False].scores
    assert (tmp_path / "False.csv").read_bytes() == (tmp_path / "True.csv").read_bytes()
    assert (runs[False].scores, runs[False].alerts, runs[False].dead_letters) == (
        runs[True].scores,
        runs[True].alerts,
        runs[True].dead_letters,
    )


def test_a_back_test_sharded_over_processes_writes_the_same_bytes(demo_registry, tmp_path) -> None:
    """``workers`` processes each score the assets of some partitions: the output file and every
    count (readings published, rows skipped, dead letters, alerts) are those of one process, on a
    motor log with sensor faults (bad rows, stale sensors), failures and repairs."""
    from demo_model import MOTOR

    from simulator.config import FleetConfig
    from simulator.writers import simulate_to_files

    log = tmp_path / "log"
    simulate_to_files(FleetConfig(motors=15, interval_s=60.0, mean_onset_days=1.0), 4, log, 3 * 86_400.0)
    reported: Counter[tuple[str, int]] = Counter()
    runs = {
        workers: score_logs(
            [log],
            MOTOR,
            demo_registry,
            tmp_path / f"{workers}.parquet",
            on_bad_row=lambda row: reported.update([(row.path, row.line)]),
            workers=workers,
        )
        for workers in (1, 2, 3)
    }
    one = runs[1]
    assert one.alerts > 0 and one.scores > 0
    assert len(reported) == sum(one.replay.skipped.values()) > 0
    assert set(reported.values()) == {3}, "each bad row is reported once by each back-test"
    for workers in (2, 3):
        assert (tmp_path / f"{workers}.parquet").read_bytes() == (tmp_path / "1.parquet").read_bytes()
        assert runs[workers] == replace(one, processes=workers)


def test_a_back_test_shows_every_assets_alerts_through_a_flood(registry, tmp_path) -> None:
    """Flood protection holds back raises while much of the fleet raises at once; it spares the
    people paged, and depends on the whole fleet. A back-test reports each asset's own alert states,
    so it keeps none: with a profile where any second raise would be a flood, every engine that
    alerts shows it, and shards (which each see part of the fleet) write the same bytes."""
    log = _write(_engines(range(81, 87)), tmp_path / "to_failure.txt")
    text = (Path(ingest.profiles.__file__).parent / "profiles" / "cmapss.toml").read_text()
    floody = text.replace("flood_limit = 20", "flood_limit = 1")
    floody = floody.replace("flood_window = 10.0", "flood_window = 1e6")
    assert floody.count("flood") == text.count("flood") and floody != text
    (tmp_path / "cmapss.toml").write_text(floody)
    profile = load_profile(tmp_path / "cmapss.toml")
    for workers in (1, 2):
        score_logs([log], profile, registry, tmp_path / f"{workers}.csv", fmt="cmapss", workers=workers)
    assert (tmp_path / "1.csv").read_bytes() == (tmp_path / "2.csv").read_bytes()
    scores = pd.read_csv(tmp_path / "1.csv", keep_default_na=False)
    assert scores.loc[scores["alert_state"] == "active", "asset_id"].nunique() > 1


def test_a_model_of_another_feature_spec_fails_the_back_test_loudly(demo_registry, unseen, tmp_path) -> None:
    """A motor model cannot score C-MAPSS features: the back-test must fail and say why, not write
    an empty file and succeed (every reading is scored or dead-lettered)."""
    log, _ = unseen
    out = tmp_path / "scores.csv"
    with pytest.raises(ModelUnavailable, match="feature spec"):
        score_logs([log], CMAPSS, demo_registry, out, fmt="cmapss", progress=False)
    assert not out.exists() and _no_feature_thread_left()
    args = ["replay", str(log), "--format", "cmapss", "--profile", "cmapss", "--out", str(out)]
    result = CliRunner().invoke(main, [*args, "--registry", str(demo_registry)])
    assert result.exit_code == 1 and "cannot load model v0001" in result.output and not out.exists()


def test_a_model_registered_during_the_back_test_does_not_change_its_scores(
    registry, unseen, tmp_path, monkeypatch
) -> None:
    """A live scorer hot-reloads a new version; a back-test must score the whole log with the model
    it started with, or its output would depend on when someone trained."""
    log, frame = unseen
    mine = tmp_path / "registry"
    shutil.copytree(registry, mine)

    def register_a_new_version() -> None:
        shutil.copytree(mine / "v0001", mine / "v0002")
        (mine / "latest").write_text("v0002\n")
        time.sleep(1.5)  # past the live scorer's reload check (1 s)

    rounds = _on_call(monkeypatch, features.worker.FeatureWorker, 3, register_a_new_version)
    out = tmp_path / "scores.csv"
    score_logs([log], CMAPSS, mine, out, fmt="cmapss", send_rows=50, progress=False, workers=1)
    assert Registry(mine).latest_version() == "v0002" and len(rounds) > 3
    scores = pd.read_csv(out)
    assert len(scores) == len(frame) and set(scores["model_version"]) == {"v0001"}


def _on_call(monkeypatch, stage: type, n: int, action: Callable[[], None]) -> list[int]:
    """``action()`` runs before the ``n``-th ``run_once`` of ``stage``; returns the calls so far."""
    real, calls = stage.run_once, []

    def run_once(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            action()
        return real(self, *args, **kwargs)

    monkeypatch.setattr(stage, "run_once", run_once)
    return calls


def _fail_on_call(monkeypatch, stage: type, n: int, error: BaseException) -> None:
    """The ``n``-th ``run_once`` of ``stage`` raises ``error``."""

    def fail() -> None:
        raise error

    _on_call(monkeypatch, stage, n, fail)


def _no_feature_thread_left() -> bool:
    return not any(t.name == "motorwatch-features" for t in threading.enumerate())


def test_a_failure_on_the_feature_side_is_raised_by_the_back_test(
    registry, unseen, tmp_path, monkeypatch
) -> None:
    """The replay and the feature worker run on a second thread: their failure is the caller's, in
    one process, and from a shard's process (with that process's traceback)."""
    log, _ = unseen
    _fail_on_call(monkeypatch, features.worker.FeatureWorker, 3, OSError("disk gone"))
    with pytest.raises(OSError, match="disk gone"):
        score_logs([log], CMAPSS, registry, tmp_path / "s.csv", fmt="cmapss", send_rows=50, workers=1)
    assert _no_feature_thread_left() and not (tmp_path / "s.csv").exists()

    def fail_in_a_shards_process() -> None:
        if multiprocessing.parent_process() is not None:
            raise OSError("disk gone")

    _on_call(monkeypatch, features.worker.FeatureWorker, 3, fail_in_a_shards_process)
    with pytest.raises(OSError, match="disk gone") as raised:
        score_logs([log], CMAPSS, registry, tmp_path / "s.csv", fmt="cmapss", send_rows=50, workers=2)
    assert "in process motorwatch-shard-1" in str(raised.value.__cause__)
    assert _no_feature_thread_left() and not (tmp_path / "s.csv").exists()


def test_a_failure_on_the_scoring_side_stops_the_feature_side(
    registry, unseen, tmp_path, monkeypatch
) -> None:
    """The scorer fails while the feature side has more rounds than the hand-over holds: the feature
    side must stop too (not wait forever for room), and the scorer's error is raised."""
    log, frame = unseen
    _fail_on_call(monkeypatch, scoring.worker.Scorer, 2, MemoryError("scorer out of memory"))
    assert len(frame) > 20 * 10  # rounds of 10 readings: many more than the 4 the hand-over holds
    raised: list[BaseException] = []

    def back_test() -> None:
        try:
            score_logs([log], CMAPSS, registry, tmp_path / "s.csv", fmt="cmapss", send_rows=10, workers=1)
        except BaseException as exc:
            raised.append(exc)

    caller = threading.Thread(target=back_test, daemon=True)
    caller.start()
    caller.join(timeout=120)  # a deadlock guard, far beyond the second it takes
    assert not caller.is_alive(), "the back-test hangs: the feature side waits for room forever"
    assert [type(e) for e in raised] == [MemoryError] and _no_feature_thread_left()


def test_a_back_test_gives_the_garbage_collector_back_as_it_found_it(
    registry, unseen, tmp_path, monkeypatch
) -> None:
    """A back-test tunes the collector for itself (``motorwatch.offline._quiet_collector``). A caller
    that scores logs in a long-lived process (a notebook, a service) gets its thresholds back, and
    the objects frozen meanwhile are collectable again: after a back-test, and after one that failed."""
    log, _ = unseen
    before = gc.get_threshold(), gc.get_freeze_count()
    during: list[tuple[tuple[int, ...], int]] = []
    _on_call(
        monkeypatch,
        scoring.worker.Scorer,
        2,
        lambda: during.append((gc.get_threshold(), gc.get_freeze_count())),
    )
    score_logs([log], CMAPSS, registry, tmp_path / "s.csv", fmt="cmapss", send_rows=50, workers=1)
    assert during[0][0][0] > before[0][0] and during[0][1] > before[1]
    assert (gc.get_threshold(), gc.get_freeze_count()) == before

    _fail_on_call(monkeypatch, features.worker.FeatureWorker, 3, OSError("disk gone"))
    with pytest.raises(OSError, match="disk gone"):
        score_logs([log], CMAPSS, registry, tmp_path / "t.csv", fmt="cmapss", send_rows=50, workers=1)
    assert (gc.get_threshold(), gc.get_freeze_count()) == before


def test_rounds_come_out_whole_and_in_order_and_stop_unblocks_the_sender() -> None:
    rounds = Rounds(depth=1)
    rounds.send_batch("a", [(b"k", 1)])
    rounds.send_batch("b", iter([(b"k", 2), (b"j", 3)]))
    rounds.flush()
    rounds.flush()  # nothing sent since: no empty round
    rounds.send_batch("a", [(b"k", 4)])
    sender = threading.Thread(target=lambda: (rounds.flush(), rounds.end()))
    sender.start()
    assert list(rounds) == [[("a", [(b"k", 1)]), ("b", [(b"k", 2), (b"j", 3)])], [("a", [(b"k", 4)])]]
    sender.join()

    stuck = Rounds(depth=1)
    stuck.send_batch("a", [(b"k", 1)])
    stuck.flush()  # the queue is full now
    failed: list[BaseException] = []

    def send_more() -> None:
        stuck.send_batch("a", [(b"k", 2)])
        try:
            stuck.flush()
        except Rounds.Stopped as exc:
            failed.append(exc)

    sender = threading.Thread(target=send_more)
    sender.start()
    stuck.stop()
    sender.join(timeout=5)
    assert not sender.is_alive() and len(failed) == 1
