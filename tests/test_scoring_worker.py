"""The scorer worker on the in-process bus, with the deterministic Predictor double of scoring_doubles.py:
what is under test is the worker's batching, sequences, policy wiring, outputs, dead letters, offsets and
hot reload. The real-model integration test is in test_scoring_models.py.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from scoring_doubles import NAMES, DoubleRegistry, drain, features, make_scorer, read

from ingest import topics
from ingest.inproc import InProcessBus
from ingest.schemas import Alert, DeadLetter, FeatureBlock, Features, MaintenanceJob, Score, encode
from scoring import metrics


def stream(n_assets: int = 5, steps: int = 12) -> list[tuple[bytes, bytes]]:
    """Asset i ramps to high risk after step 4 when i is even; odd assets stay healthy."""
    msgs = []
    for t in range(steps):
        for i in range(n_assets):
            risk = 0.95 if (i % 2 == 0 and t >= 4) else 0.1
            msgs.append((f"m{i}".encode(), features(f"m{i}", 1000.0 + 60 * t, risk)))
    return msgs


def test_scores_every_vector_once_raises_alerts_with_drivers_and_plans_jobs(tmp_path):
    bus = InProcessBus(partitions=3)
    bus.producer().send_batch(topics.FEATURES, stream())
    registry = DoubleRegistry()
    scorer = make_scorer(bus, registry, tmp_path)
    assert drain(scorer) == 60
    scores = read(bus, topics.SCORES, Score)
    assert sorted((s.asset_id, s.ts) for s in scores) == sorted(
        (f"m{i}", 1000.0 + 60 * t) for t in range(12) for i in range(5)
    )
    assert {s.model_version for s in scores} == {"v0001"} and {s.rul_unit for s in scores} == {"h"}
    assert all(s.rul == pytest.approx(90.0) for s in scores)
    alerts = read(bus, topics.ALERTS, Alert)
    # on_delay = 3 in the motor profile: raised at the third high score (t = 6), once per asset.
    assert sorted((a.asset_id, a.state, a.priority, a.ts) for a in alerts) == [
        (f"m{i}", "raised", "high", 1000.0 + 60 * 6) for i in (0, 2, 4)
    ]
    for a in alerts:
        assert (
            a.model_version == "v0001"
            and a.drivers[0].feature == "a"
            and a.drivers[0].value == pytest.approx(0.95)
        )
    jobs = read(bus, topics.SCHEDULE, MaintenanceJob)
    assert sorted(j.asset_id for j in jobs) == ["m0", "m2", "m4"]
    planned = json.loads((tmp_path / "plan.json").read_text())
    assert sorted(p["asset_id"] for p in planned) == ["m0", "m2", "m4"]
    # Offsets were committed: a restarted scorer of the group has nothing left to do.
    scorer.close()
    assert drain(make_scorer(bus, registry)) == 0


def test_bad_messages_are_dead_lettered_and_the_rest_scored():
    bus = InProcessBus(partitions=2)
    bad = [
        (b"m1", b"not json"),
        (b"m1", encode(Features(asset_id="m1", ts=5.0, features={"a": 0.2, "zz": 1.0}))),  # another spec
        (b"m1", b'{"v":1,"asset_id":"m1","ts":5.5,"features":{"a":null}}'),
    ]
    # Omitted features are undefined (NaN for the model), not an error.
    partial = encode(Features(asset_id="m1", ts=6.0, features={"a": 0.2}))
    bus.producer().send_batch(topics.FEATURES, [*bad, (b"m1", partial), (b"m1", features("m1", 7.0, 0.2))])
    assert drain(make_scorer(bus, DoubleRegistry())) == 5
    letters = read(bus, topics.FEATURES_DLQ, DeadLetter)
    assert sorted(d.reason for d in letters) == ["non_finite", "not_json", "unknown_signal"]
    assert {d.raw for d in letters} == {v for _, v in bad}
    assert [(s.asset_id, s.ts) for s in read(bus, topics.SCORES, Score)] == [("m1", 6.0), ("m1", 7.0)]


def test_a_restarted_scorer_redoes_uncommitted_batches_without_duplicate_alerts():
    msgs = stream(n_assets=6, steps=14)
    clean_bus = InProcessBus(partitions=2)
    clean_bus.producer().send_batch(topics.FEATURES, msgs)
    drain(make_scorer(clean_bus, DoubleRegistry(), batch_size=7))
    clean = {(a.alert_id, a.asset_id, a.state, a.ts) for a in read(clean_bus, topics.ALERTS, Alert)}
    assert len(clean) == 3

    bus = InProcessBus(partitions=2)
    bus.producer().send_batch(topics.FEATURES, msgs)
    crashing = make_scorer(bus, DoubleRegistry(), batch_size=32)
    crashing.consumer.commit = lambda: None  # the process dies after producing, before committing
    for _ in range(3):
        crashing.run_once(timeout_s=0.0)
    crashing.consumer.close()
    # A new process of the group redoes it all; it takes over the alerts already published, so the
    # redelivered scores raise nothing twice.
    drain(make_scorer(bus, DoubleRegistry(), batch_size=5))
    redelivered = read(bus, topics.ALERTS, Alert)
    assert sorted((a.alert_id, a.asset_id, a.state, a.ts) for a in redelivered) == sorted(clean)


def test_partitions_moving_to_a_new_scorer_take_their_open_alerts_along():
    bus = InProcessBus(partitions=2)
    p = bus.producer()
    assets = [f"m{i}" for i in range(8)]
    p.send_batch(
        topics.FEATURES, [(a.encode(), features(a, float(t), 0.95)) for t in range(3) for a in assets]
    )
    one = make_scorer(bus, DoubleRegistry(), group_id="g")
    drain(one)
    raised = {a.asset_id: a.alert_id for a in read(bus, topics.ALERTS, Alert)}
    assert sorted(raised) == assets and len(one.scheduler.jobs) == 8
    two = make_scorer(bus, DoubleRegistry(), group_id="g")  # joins the group: the partitions are split
    p.send_batch(
        topics.FEATURES, [(a.encode(), features(a, float(t), 0.1)) for t in (3.0, 4.0) for a in assets]
    )
    while one.run_once(timeout_s=0.0) + two.run_once(timeout_s=0.0):
        pass
    # Every alert is cleared once, by its asset's current owner, under the id it was raised with.
    cleared = [(a.asset_id, a.alert_id) for a in read(bus, topics.ALERTS, Alert) if a.state == "cleared"]
    assert sorted(cleared) == sorted(raised.items())
    assert one.policy.active() == {} == two.policy.active()
    assert one.scheduler.jobs == {} == two.scheduler.jobs
    # The crew is shared the way the partitions are: each plans into its own partitions' slots.
    assert one.scheduler.owned | two.scheduler.owned == {0, 1}
    assert not one.scheduler.owned & two.scheduler.owned
    # Each job is withdrawn once on the schedule, when its alert clears: not by the scorer that
    # handed the asset over (the new owner plans it on).
    jobs = read(bus, topics.SCHEDULE, MaintenanceJob)
    cancelled = [j.job_id for j in jobs if j.status == "cancelled"]
    assert sorted(cancelled) == sorted({j.job_id for j in jobs if j.status == "planned"})
    assert len(cancelled) == 8
    assert 0 < one.scored - 24 < 16 and 0 < two.scored < 16 and one.scored - 24 + two.scored == 16


def test_stale_features_raise_a_no_data_alert_and_maintenance_clears():
    bus = InProcessBus(partitions=2)
    p = bus.producer()
    p.send_batch(topics.FEATURES, [(b"m1", features("m1", t, 0.95)) for t in (1.0, 2.0, 3.0)])
    p.send_batch(topics.FEATURES, [(b"m2", features("m2", 3.0, 0.0, stale=True))])
    scorer = make_scorer(bus, DoubleRegistry())
    assert drain(scorer) == 4
    # The repair at ts 4 clears m1; a score from before the repair that arrives after it is ignored.
    p.send_batch(topics.MAINTENANCE, [(b"m1", b'{"v":1,"asset_id":"m1","ts":4.0,"action":"repair"}')])
    assert drain(scorer) == 1
    p.send_batch(topics.FEATURES, [(b"m1", features("m1", t, 0.95)) for t in (3.5, 3.6, 3.7)])
    assert drain(scorer) == 3
    got = [(a.asset_id, a.state, a.kind) for a in read(bus, topics.ALERTS, Alert)]
    assert sorted(got) == [("m1", "cleared", "risk"), ("m1", "raised", "risk"), ("m2", "raised", "no_data")]
    assert got.index(("m1", "raised", "risk")) < got.index(("m1", "cleared", "risk"))
    assert list(scorer.policy.active()) == ["m2"]


def test_hot_reload_swaps_version_between_batches_without_loss_or_duplicates():
    bus = InProcessBus(partitions=3)
    msgs = stream(n_assets=20, steps=10)
    bus.producer().send_batch(topics.FEATURES, msgs)
    registry = DoubleRegistry("v0001")
    scorer = make_scorer(bus, registry, batch_size=50)
    consumed = scorer.run_once() + scorer.run_once()
    registry.latest = "v0002"
    consumed += drain(scorer)
    assert consumed == len(msgs) and registry.loaded == ["v0001", "v0002"]
    scores = read(bus, topics.SCORES, Score)
    keys = [(s.asset_id, s.ts) for s in scores]
    assert len(keys) == len(set(keys)) == len(msgs)
    versions = [s.model_version for s in scores]
    assert versions.count("v0001") == 100 and versions.count("v0002") == 100


@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_rows_on_a_remembered_history_take_one_lstm_step_and_score_as_their_whole_sequence(batch_size):
    """A model trained at a 5 s cadence scoring 1 s vectors: the LSTM's state after an asset's kept
    history serves its next rows (one step each), and every RUL is that of the row's full sequence:
    the last T - 1 kept vectors, then the row. A reload forgets the states (another LSTM)."""
    rng = np.random.default_rng(5)
    step, seq_len, n_assets, steps = 5.0, 4, 3, 40
    msgs, expected = [], {}
    kept: dict[str, list[float]] = {}
    kept_at: dict[str, float] = {}
    for t in range(steps):
        for i in range(n_assets):
            aid, ts, b = f"m{i}", 1000.0 + t, float(np.float32(rng.random()))
            msgs.append((aid.encode(), features(aid, ts, 0.1, b)))
            history = kept.setdefault(aid, [])[-(seq_len - 1) :]
            window = [*([history[0]] if history else [b]) * (seq_len - 1 - len(history)), *history, b]
            expected[(aid, ts)] = 100.0 * float(np.mean(np.array(window, np.float32)))
            if ts - kept_at.get(aid, -np.inf) >= step * 0.9:
                kept[aid].append(b)
                kept_at[aid] = ts
    counted = {path: metrics.lstm_rows(path) for path in ("sequence", "step")}
    bus = InProcessBus(partitions=2)
    bus.producer().send_batch(topics.FEATURES, msgs[: len(msgs) // 2])
    registry = DoubleRegistry(seq_step=step)
    scorer = make_scorer(bus, registry, batch_size=batch_size)
    drain(scorer)
    registry.latest = "v0002"
    bus.producer().send_batch(topics.FEATURES, msgs[len(msgs) // 2 :])
    drain(scorer)
    scores = read(bus, topics.SCORES, Score)
    assert len(scores) == len(msgs)
    for s in scores:
        assert s.rul == pytest.approx(expected[(s.asset_id, s.ts)], rel=1e-6), (s.asset_id, s.ts)
    first, second = registry.predictors
    # Whole sequences, per asset and whatever the batches: its first row (no history: it pads itself
    # with copies of itself, the prefix of the history its vector opens, which its state then
    # serves), the first row on each of its 7 later histories (a vector kept every 5 rows), and its
    # first row after the reload (the old model's states are not used). Every other row steps.
    full, stepped = sum(first.calls) + sum(second.calls), sum(first.steps) + sum(second.steps)
    assert (full, stepped) == (n_assets * (1 + (steps // 5 - 1) + 1), len(msgs) - full)
    assert (
        metrics.lstm_rows("sequence") - counted["sequence"],
        metrics.lstm_rows("step") - counted["step"],
    ) == (
        full,
        stepped,
    )


def test_feature_blocks_handed_over_in_one_process_score_as_their_json_would():
    """A feature worker in the scorer's process hands over (block, row) values: undefined and
    non-finite features, stale markers and foreign feature names must come out as from JSON."""
    rng = np.random.default_rng(2)
    values = rng.random((60, 3))
    values[rng.random(values.shape) < 0.1] = np.nan
    values[3, 1], values[7, 0], values[8, 1] = np.inf, -np.inf, np.inf
    ids = [f"m{i % 4}" for i in range(60)]
    vectors = FeatureBlock(ids, 1000.0 + np.arange(60), NAMES, values)
    markers = FeatureBlock(["m1", "m2"], np.array([2000.0, 2001.0]), NAMES, np.empty((2, 0)), stale=True)
    foreign = FeatureBlock(["m3"], np.array([3000.0]), ("a", "b", "zz"), np.ones((1, 3)))

    def scored(messages) -> tuple[list, list, list]:
        bus = InProcessBus(partitions=2)
        bus.producer().send_batch(topics.FEATURES, messages)
        drain(make_scorer(bus, DoubleRegistry(), batch_size=25))
        scores = sorted((s.asset_id, s.ts, s.risk, s.rul) for s in read(bus, topics.SCORES, Score))
        alerts = sorted((a.asset_id, a.ts, a.kind, a.state) for a in read(bus, topics.ALERTS, Alert))
        return scores, alerts, [d.reason for d in read(bus, topics.FEATURES_DLQ, DeadLetter)]

    blocks = (vectors, markers, foreign)
    as_rows = scored([m for b in blocks for m in b.rows()])
    assert as_rows == scored([m for b in blocks for m in b.messages()])
    assert len(as_rows[0]) == 60 and as_rows[2] == ["unknown_signal"]
    assert any(kind == "no_data" for _, _, kind, _ in as_rows[1])


def test_a_score_sink_takes_every_score_the_topic_would_have_and_alerts_are_still_published():
    """``ScorerConfig.score_sink`` (a back-test writing its file): each batch's scores go to the sink
    as one block, the same scores a reader of the topic gets, while the topic stays empty; alerts
    and dead letters go to their topics as ever."""
    messages = [*stream(), (b"m9", b"{not json")]

    def run(**kw) -> tuple[InProcessBus, int]:
        bus = InProcessBus(partitions=3)
        bus.producer().send_batch(topics.FEATURES, messages)
        return bus, drain(make_scorer(bus, DoubleRegistry(), batch_size=16, **kw))

    published, consumed = run()
    blocks: list = []
    sunk, consumed_with_sink = run(score_sink=blocks.append)
    assert consumed_with_sink == consumed == 61
    expected = sorted(
        (s.asset_id, s.ts, s.risk, s.rul, s.model_version) for s in read(published, topics.SCORES, Score)
    )
    got = sorted(
        (a, t, r, u, b.model_version)
        for b in blocks
        for a, t, r, u in zip(b.asset_id, b.ts.tolist(), b.risk.tolist(), b.rul.tolist(), strict=True)
    )
    assert len(expected) == 60 and got == expected and len(blocks) > 1
    assert read(sunk, topics.SCORES, Score) == []
    assert sorted((a.asset_id, a.state) for a in read(sunk, topics.ALERTS, Alert)) == [
        (f"m{i}", "raised") for i in (0, 2, 4)
    ]
    assert [d.reason for d in read(sunk, topics.FEATURES_DLQ, DeadLetter)] == ["not_json"]


def test_score_cadence_publishes_at_most_one_score_per_interval_but_alerts_on_every_score():
    bus = InProcessBus(partitions=1)
    bus.producer().send_batch(topics.FEATURES, [(b"m1", features("m1", float(t), 0.95)) for t in range(10)])
    scorer = make_scorer(bus, DoubleRegistry(), score_interval=4.0)
    drain(scorer)
    assert [s.ts for s in read(bus, topics.SCORES, Score)] == [0.0, 4.0, 8.0]
    assert [a.ts for a in read(bus, topics.ALERTS, Alert)] == [2.0]


ODD = b'{"v":1,"asset_id":"m2","ts":2.0,"features":%s,"stale":false}'


@pytest.mark.parametrize(
    ("odd", "reason", "m2_scores"),
    [
        (encode(Features(asset_id="m2", ts=2.0, features={}, stale=True)), None, 0),  # raises no_data
        (ODD % b'{"a":0.1,"b":null,"c":0.5}', "non_finite", 0),
        (ODD % b'{"a":0.1,"b":1e999}', "non_finite", 0),
        (ODD % b'{"a":0.1,"zz":1.0}', "unknown_signal", 0),
        (ODD.replace(b'"v":1', b'"v":2') % b'{"a":0.1}', "wrong_version", 0),
        (ODD.replace(b'"stale"', b'"extra":1,"stale"') % b'{"a":0.1}', None, 1),  # tolerated
    ],
    ids=["stale", "null", "overflow", "unknown_feature", "v2", "extra_envelope_field"],
)
def test_one_odd_message_among_clean_ones_is_handled_alone(odd, reason, m2_scores):
    """A clean batch decodes in one call straight into model order; one odd message must neither poison
    the batch nor slip through it: dead-lettered with its reason (or accepted), the rest scored."""
    bus = InProcessBus(partitions=1)
    clean = [(b"m1", features("m1", float(t), 0.2 + t / 10, b=0.5)) for t in range(4)]
    bus.producer().send_batch(topics.FEATURES, [*clean[:2], (b"m2", odd), *clean[2:]])
    assert drain(make_scorer(bus, DoubleRegistry())) == 5
    letters = read(bus, topics.FEATURES_DLQ, DeadLetter)
    assert [(d.reason, d.raw) for d in letters] == ([(reason, odd)] if reason else [])
    scores = read(bus, topics.SCORES, Score)
    m1 = [s for s in scores if s.asset_id == "m1"]
    assert [s.ts for s in m1] == [0.0, 1.0, 2.0, 3.0]
    assert [s.risk for s in m1] == pytest.approx([0.2, 0.3, 0.4, 0.5])
    assert all(s.rul == pytest.approx(50.0) for s in m1)  # 100 * mean(b)
    assert len(scores) - len(m1) == m2_scores


def test_features_decode_in_model_order_whatever_the_message_order():
    bus = InProcessBus(partitions=1)
    raw = b'{"v":1,"asset_id":"m1","ts":1.0,"features":{"c":0.5,"b":0.25,"a":0.75}}'  # stale omitted
    partial = b'{"v":1,"asset_id":"m1","ts":2.0,"features":{"b":0.5}}'  # a, c undefined: NaN
    bus.producer().send_batch(topics.FEATURES, [(b"m1", raw), (b"m1", partial)])
    registry = DoubleRegistry()
    scorer = make_scorer(bus, registry)
    drain(scorer)
    scores = read(bus, topics.SCORES, Score)
    # risk = a (NaN -> 0 in the double), RUL = 100 * mean of b over the left-padded sequence of 4.
    assert [(s.risk, s.rul) for s in scores] == [pytest.approx((0.75, 25.0)), pytest.approx((0.0, 31.25))]
    np.testing.assert_array_equal(scorer.store.latest(["m1"])[0], np.array([np.nan, 0.5, np.nan], np.float32))


def test_alert_drivers_compare_with_the_asset_own_baseline_relearnt_after_maintenance():
    import dataclasses

    from features.spec import FeatureSpec
    from ingest.profiles import load_profile
    from scoring.worker import Scorer, ScorerConfig

    def vec(asset: str, t: float, a: float, c: float) -> tuple[bytes, bytes]:
        return asset.encode(), encode(Features(asset_id=asset, ts=t, features={"a": a, "b": 0.9, "c": c}))

    motor = load_profile("motor")
    spec = dataclasses.replace(FeatureSpec.from_profile(motor), baseline_n=2)  # baseline: first 2 vectors
    bus = InProcessBus(partitions=1)
    p = bus.producer()
    # m1 runs with c = 0.5 when healthy, m2 with c = 3.0; both then go high risk (a = 0.95) with c = 3.0.
    p.send_batch(
        topics.FEATURES, [vec(m, t, 0.1, c) for t in (0.0, 1.0) for m, c in (("m1", 0.5), ("m2", 3.0))]
    )
    p.send_batch(topics.FEATURES, [vec(m, t, 0.95, 3.0) for t in (2.0, 3.0, 4.0) for m in ("m1", "m2")])
    scorer = Scorer(bus, motor, DoubleRegistry(), ScorerConfig(reload_interval_s=0.0), spec=spec)
    drain(scorer)
    raised = {a.asset_id: {d.feature: d for d in a.drivers} for a in read(bus, topics.ALERTS, Alert)}
    assert [d.feature for d in sorted(raised["m1"].values(), key=lambda d: -d.contribution)][:2] == ["c", "a"]
    assert raised["m1"]["c"].baseline == pytest.approx(0.5) and raised["m1"]["c"].value == pytest.approx(3.0)
    assert raised["m2"]["c"].baseline == pytest.approx(3.0) and raised["m2"]["c"].contribution == 0.0
    assert max(raised["m2"].values(), key=lambda d: d.contribution).feature == "a"
    # A repair: m1's next two vectors are its new baseline (now c = 3.0 is its normal).
    p.send_batch(topics.MAINTENANCE, [(b"m1", b'{"v":1,"asset_id":"m1","ts":5.0,"action":"repair"}')])
    drain(scorer)
    p.send_batch(topics.FEATURES, [vec("m1", t, 0.95, 3.0) for t in (6.0, 7.0, 8.0)])
    drain(scorer)
    again = [a for a in read(bus, topics.ALERTS, Alert) if a.asset_id == "m1" and a.ts == 8.0]
    assert len(again) == 1 and {d.feature: d.baseline for d in again[0].drivers}["c"] == pytest.approx(3.0)


@pytest.mark.kafka
def test_consumer_lag_on_kafka_counts_the_records_not_consumed_yet(kafka_bootstrap):
    import time
    import uuid

    from prometheus_client import REGISTRY

    from ingest.kafka_bus import KafkaBus

    prefix = f"t{uuid.uuid4().hex[:8]}."
    bus = KafkaBus(kafka_bootstrap)
    bus.create_topics([prefix + t for t in topics.ALL], 1)
    producer = bus.producer()
    producer.send_batch(prefix + topics.FEATURES, [(b"m1", features("m1", float(t), 0.1)) for t in range(50)])
    producer.flush()
    scorer = make_scorer(bus, DoubleRegistry(), group_id=f"scorer-{prefix}", topic_prefix=prefix)
    try:
        consumed, deadline = 0, time.monotonic() + 60
        while not consumed and time.monotonic() < deadline:  # the first polls join the group
            consumed = scorer.run_once(max_records=10, timeout_s=0.5)
        assert consumed == 10
        scorer._next_lag = 0.0
        scorer._update_lag()
        lag = REGISTRY.get_sample_value("motorwatch_scorer_consumer_lag_messages", {"topic": topics.FEATURES})
        assert lag == 40
    finally:
        scorer.close()
        producer.close()
        bus.close()


class CardRegistry(DoubleRegistry):
    """A registry whose model card carries the operating point chosen on its validation assets."""

    def __init__(self, threshold: float | None) -> None:
        super().__init__()
        self.threshold = threshold

    def card(self, version=None):
        metrics = {} if self.threshold is None else {"operating_point": {"threshold": self.threshold}}
        return SimpleNamespace(metrics=metrics, created="2026-11-23T12:00:00Z")


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [(0.4, [("raised", "low")]), (None, []), (0.0, [])],
    ids=["validated_point", "no_point_profile", "unusable_point_profile"],
)
def test_alerts_raise_at_the_models_validated_operating_point(threshold, expected):
    """Operators get the alert quality the model card reports: its threshold, not the profile's 0.7."""
    bus = InProcessBus(partitions=1)
    bus.producer().send_batch(topics.FEATURES, [(b"m1", features("m1", float(t), 0.5)) for t in range(5)])
    scorer = make_scorer(bus, CardRegistry(threshold))
    drain(scorer)
    assert [(a.state, a.priority) for a in read(bus, topics.ALERTS, Alert)] == expected
    if threshold:
        # Hysteresis keeps the profile's ratio (clear below 0.5 / 0.7 of the raise threshold).
        assert scorer.policy.config.on_risk == 0.4
        assert scorer.policy.config.off_risk == pytest.approx(0.4 * 0.5 / 0.7)
