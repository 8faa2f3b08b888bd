"""The scorer's /metrics: served over HTTP by a scorer that just worked, parsed back with prometheus_client's
own parser, and linted by the real `promtool check metrics`."""

from __future__ import annotations

import subprocess
import time
import urllib.request

import pytest
from deploy_tools import free_port, tool
from prometheus_client.parser import text_string_to_metric_families
from scoring_doubles import DoubleRegistry, drain, features, make_scorer

from ingest import topics
from ingest.inproc import InProcessBus
from scoring import metrics

N_ASSETS, N_HIGH, STEPS = 30, 25, 4  # the motor profile floods above 20 raises in 10 minutes


def scrape_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


@pytest.fixture(scope="module")
def exposition() -> tuple[dict, dict, str]:
    """Scrapes before and after a scorer run: 30 assets, m0..m24 high risk (25 raises: 20 published, then
    a flood), event time 8..5 s before the wall clock; one bad message. Returns (before, after, text)."""
    port = free_port()
    server = metrics.serve(port, "127.0.0.1")
    try:
        before = samples(scrape_text(port))
        bus = InProcessBus(partitions=2)
        now = time.time()
        msgs = [
            (f"m{i}".encode(), features(f"m{i}", now - 8 + t, 0.95 if i < N_HIGH else 0.05 + i / 100))
            for t in range(STEPS)
            for i in range(N_ASSETS)
        ]
        bus.producer().send_batch(topics.FEATURES, [*msgs, (b"m0", b"{broken")])
        scorer = make_scorer(bus, DoubleRegistry("v0042"), top_k=4)
        scorer._next_lag = 0.0
        assert drain(scorer) == len(msgs) + 1
        scorer._next_lag = 0.0
        scorer.run_once(timeout_s=0.0)  # an idle round refreshes lag and the top-K gauges
        text = scrape_text(port)
    finally:
        server.shutdown()
    return before, samples(text), text


def test_metrics_exposition_reports_what_the_scorer_did(exposition):
    before, after, _ = exposition
    n = N_ASSETS * STEPS

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("motorwatch_scorer_messages_in_total", topic=topics.FEATURES) == n + 1
    assert delta("motorwatch_scorer_messages_out_total", topic=topics.SCORES) == n
    assert delta("motorwatch_scorer_messages_out_total", topic=topics.ALERTS) == 21  # 20 assets + 1 flood
    assert delta("motorwatch_alerts_raised_total", priority="high", kind="risk") == 20
    assert delta("motorwatch_alerts_raised_total", priority="high", kind="flood") == 1
    assert delta("motorwatch_alerts_suppressed_total") == N_HIGH - 20
    assert after[("motorwatch_alert_flood_active", ())] == 1
    assert after[("motorwatch_alerts_active", (("priority", "high"),))] == N_HIGH  # suppressed ones too
    assert after[("motorwatch_schedule_jobs", ())] == N_HIGH
    assert delta("motorwatch_dead_letters_total", stage="scorer", reason="not_json") == 1
    assert delta("motorwatch_scorer_inference_batch_size_sum") == n
    assert delta("motorwatch_scorer_inference_duration_seconds_count") >= 1
    assert delta("motorwatch_fleet_risk_count") == n
    assert delta("motorwatch_fleet_risk_bucket", le="0.5") == (N_ASSETS - N_HIGH) * STEPS
    # Reading event time to score emission: 5..8 s (plus the run's own time) for every score.
    assert delta("motorwatch_score_latency_seconds_count") == n
    assert delta("motorwatch_score_latency_seconds_bucket", le="10.0") == n
    assert delta("motorwatch_score_latency_seconds_bucket", le="5.0") == 0
    assert after[("motorwatch_scorer_model_info", (("version", "v0042"),))] == 1
    top = sorted(
        (dict(k[1])["rank"], dict(k[1])["asset_id"], v)
        for k, v in after.items()
        if k[0] == "motorwatch_asset_risk_top"
    )
    assert len(top) == 4 and {a for _, a, _ in top} <= {f"m{i}" for i in range(N_HIGH)}
    assert after[("motorwatch_scorer_consumer_lag_messages", (("topic", topics.FEATURES),))] == 0


def test_live_scorer_metrics_pass_promtool_lint(exposition):
    _, _, text = exposition
    assert "motorwatch_scorer_inference_duration_seconds_bucket" in text
    result = subprocess.run(
        [tool("promtool"), "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr
