"""The scorer's /metrics: served over HTTP, parsed back with prometheus_client's own parser."""

from __future__ import annotations

import socket
import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from scoring_doubles import DoubleRegistry, drain, features, make_scorer

from ingest import topics
from ingest.inproc import InProcessBus
from scoring import metrics


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_metrics_exposition_reports_what_the_scorer_did():
    port = free_port()
    server = metrics.serve(port, "127.0.0.1")
    try:
        before = scrape(port)
        bus = InProcessBus(partitions=2)
        # 15 assets; m0..m4 go high risk (raise after on_delay = 3); one bad message.
        msgs = [
            (f"m{i}".encode(), features(f"m{i}", float(t), 0.95 if i < 5 else 0.05 + i / 100))
            for t in range(4)
            for i in range(15)
        ]
        bus.producer().send_batch(topics.FEATURES, [*msgs, (b"m0", b"{broken")])
        scorer = make_scorer(bus, DoubleRegistry("v0042"), top_k=4)
        scorer._next_lag = 0.0
        assert drain(scorer) == 61
        scorer._next_lag = 0.0
        scorer.run_once(timeout_s=0.0)  # an idle round refreshes lag and the top-K gauges
        after = scrape(port)
    finally:
        server.shutdown()

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("motorwatch_scorer_messages_in_total", topic=topics.FEATURES) == 61
    assert delta("motorwatch_scorer_messages_out_total", topic=topics.SCORES) == 60
    assert delta("motorwatch_scorer_messages_out_total", topic=topics.ALERTS) == 5
    assert delta("motorwatch_alerts_raised_total", priority="high", kind="risk") == 5
    assert after[("motorwatch_alerts_active", (("priority", "high"),))] == 5
    assert delta("motorwatch_dead_letters_total", stage="scorer", reason="not_json") == 1
    assert delta("motorwatch_scorer_inference_batch_size_sum") == 60
    assert delta("motorwatch_fleet_risk_count") == 60
    assert delta("motorwatch_fleet_risk_bucket", le="0.5") == 40  # the 10 healthy assets x 4 scores
    assert after[("motorwatch_scorer_model_info", (("version", "v0042"),))] == 1
    top = sorted(
        (dict(k[1])["rank"], dict(k[1])["asset_id"], v)
        for k, v in after.items()
        if k[0] == "motorwatch_asset_risk_top"
    )
    assert len(top) == 4 and {a for _, a, _ in top} <= {f"m{i}" for i in range(5)}
    assert after[("motorwatch_scorer_consumer_lag_messages", (("topic", topics.FEATURES),))] == 0
