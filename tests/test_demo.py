"""`motorwatch demo`: simulator, feature worker and scorer in one process, with a first model trained
on a simulated history when the registry is empty."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
import uuid
from dataclasses import replace
from pathlib import Path

import msgspec
import pandas as pd
import pytest
from click.testing import CliRunner
from demo_model import MOTOR, SMALL
from prometheus_client.parser import text_string_to_metric_families

from ingest import topics
from ingest.inproc import InProcessBus
from ingest.kafka_bus import KafkaBus
from ingest.schemas import Alert, Driver
from motorwatch.cli import main
from motorwatch.demo import Demo, _feed_line, ensure_model


def test_a_registry_with_a_model_is_not_trained_again(demo_registry: Path) -> None:
    lines: list[str] = []
    assert ensure_model(demo_registry, MOTOR, SMALL, lines.append) == "v0001"
    assert not lines  # found, not trained


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_fleet_is_scored_live_and_failing_motors_get_alerts_and_jobs(
    demo_registry: Path, tmp_path: Path
) -> None:
    bus = InProcessBus()
    config = replace(SMALL, speed=1e7, schedule_out=tmp_path / "schedule.csv")  # as fast as it goes
    demo = Demo.build(bus, MOTOR, demo_registry, config)
    fleet = demo.publisher.fleet
    days = 3
    while fleet.now < fleet.config.start_ts + days * 86400:
        demo.step()
    demo.close()
    bus.close()
    view = demo.view
    assert view.scores > 0.9 * demo.publisher.summary.readings - view.dead_letters
    assert view.version == "v0001" and len(view.risk) == config.motors
    assert view.raised > 0 and view.feed
    assert demo.publisher.summary.events.get("failure", 0) > 0
    schedule = pd.read_csv(tmp_path / "schedule.csv")
    assert len(schedule) > 0 and set(schedule["asset_id"]) <= set(view.risk)


def test_cli_runs_for_its_duration_and_serves_metrics(demo_registry: Path, tmp_path: Path) -> None:
    port = _free_port()
    scraped: list[str] = []

    def scrape() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not scraped:
            time.sleep(1)
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
            except OSError:
                continue
            if "motorwatch_scorer_messages_in_total" in body:
                scraped.append(body)

    reader = threading.Thread(target=scrape)
    reader.start()
    args = ["demo", "--duration", "8", "--no-live", "--motors", "12", "--speed", "36000"]
    args += [
        "--metrics-port",
        str(port),
        "--schedule",
        str(tmp_path / "plan.json"),
        "--registry",
        str(demo_registry),
    ]
    result = CliRunner().invoke(main, args)
    reader.join()
    assert result.exit_code == 0, result.output
    assert "riskiest motors" in result.output and "model v0001" in result.output
    assert scraped, "the demo never served its metrics"
    families = {f.name: f for f in text_string_to_metric_families(scraped[0])}
    processed = sum(
        s.value for s in families["motorwatch_features_readings"].samples if s.name.endswith("_total")
    )
    assert processed > 0


def _latency_buckets() -> dict[str, float]:
    from scoring import metrics

    family = next(iter(metrics.LATENCY.collect()))
    return {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}


def test_latency_is_measured_from_when_the_simulated_reading_was_due(demo_registry: Path) -> None:
    """On the demo's accelerated clock a reading 'happens' when the pace makes it due, not at its
    event time (months away from the wall clock)."""
    bus = InProcessBus()
    demo = Demo.build(bus, MOTOR, demo_registry, replace(SMALL, speed=3600.0, schedule_out=None))
    before = _latency_buckets()
    until = time.monotonic() + 4
    while time.monotonic() < until:
        if not demo.step():
            time.sleep(0.01)
    demo.close()
    bus.close()
    after = _latency_buckets()
    new = {le: after[le] - before.get(le, 0.0) for le in after}
    assert new["+Inf"] > 0  # scores were emitted and measured
    assert new["5.0"] == new["+Inf"]  # every one within seconds of its reading being due


def test_the_alert_feed_says_what_raised_an_alert_and_when_maintenance_cleared_it() -> None:
    raised = Alert(
        alert_id="a1",
        asset_id="m00011",
        ts=1_767_225_600.0 + 3600,
        state="raised",
        priority="medium",
        risk=0.71,
        rul=40.0,
        rul_unit="h",
        drivers=[Driver(feature="temperature_c__max_24h", value=80.0, baseline=60.0, contribution=2.0)],
        model_version="v0001",
    )
    assert _feed_line(raised).endswith("raised   medium m00011   risk 0.71 (temperature_c__max_24h)")
    repaired = msgspec.structs.replace(raised, state="cleared", reason="maintenance")
    assert _feed_line(repaired).endswith("cleared  medium m00011   risk 0.71 (maintenance)")
    assert _feed_line(msgspec.structs.replace(repaired, reason="risk_low", risk=0.3)).endswith("risk 0.30")


@pytest.mark.kafka
def test_demo_runs_over_kafka_on_its_own_topics_and_refuses_an_earlier_runs(
    demo_registry: Path, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A second run on the same topics would restart the fleet's clock under the first run's windows
    and open alerts: it is refused with what to do instead."""
    prefix = f"demo{uuid.uuid4().hex[:8]}."
    args = ["demo", "--bootstrap", kafka_bootstrap, "--topic-prefix", prefix, "--no-live"]
    args += ["--duration", "10", "--motors", "12", "--speed", "36000", "--metrics-port", "0"]
    args += ["--schedule", str(tmp_path / "plan.csv"), "--registry", str(demo_registry)]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    assert "riskiest motors" in first.output and kafka_bootstrap in first.output
    bus = KafkaBus(kafka_bootstrap)
    try:
        readings = sum(bus.end_offsets(prefix + topics.READINGS))
        scores = sum(bus.end_offsets(prefix + topics.SCORES))
        assert readings > 1_000 and scores > 0, "the stages ran over the broker, on this run's topics"
        again = CliRunner().invoke(main, args)
        assert again.exit_code == 1
        assert f"already holds {readings:,} readings" in again.output and "--topic-prefix" in again.output
        assert sum(bus.end_offsets(prefix + topics.READINGS)) == readings, "refused before publishing"
        assert bus.end_offsets(f"{prefix}never.created") == []
    finally:
        bus.close()
