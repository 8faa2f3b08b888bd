"""Alert sinks: the open-alerts board, and Alertmanager v2 delivery against a tiny local HTTP server."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from ingest import topics
from ingest.inproc import InProcessBus
from ingest.schemas import Alert, Driver, encode
from scoring.sinks import AlertBoard, AlertmanagerSink, follow_alerts


def alert(asset: str, state: str, priority: str, alert_id: str = "", risk: float = 0.9) -> Alert:
    return Alert(
        alert_id=alert_id or f"id-{asset}",
        asset_id=asset,
        ts=1_700_000_000.0,
        state=state,
        priority=priority,
        risk=risk,
        rul=20.0,
        rul_unit="h",
        model_version="v0003",
        drivers=[Driver(feature="vibration_mm_s_mean_1h", value=9.1, baseline=2.0, contribution=3.5)],
    )


@pytest.fixture
def alertmanager():
    """A stand-in Alertmanager: records the JSON bodies POSTed to /api/v2/alerts."""
    posts: list[list[dict]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            assert self.path == "/api/v2/alerts"
            posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", posts
    server.shutdown()


def test_board_keeps_one_open_alert_per_asset_sorted_by_priority_and_ignores_redelivery():
    board = AlertBoard()
    raised = [
        alert("m1", "raised", "low", risk=0.7),
        alert("m2", "raised", "high"),
        alert("m3", "raised", "medium"),
    ]
    assert len(board.apply(raised)) == 3
    assert board.apply(raised) == []  # redelivered: nothing changes
    assert [a.asset_id for a in board.rows()] == ["m2", "m3", "m1"]
    assert len(board.apply([alert("m1", "updated", "high", risk=0.95)])) == 1
    assert [a.asset_id for a in board.rows()] == ["m1", "m2", "m3"]
    assert len(board.apply([alert("m2", "cleared", "high")])) == 1
    assert board.apply([alert("m2", "cleared", "high")]) == []
    assert sorted(board.open) == ["m1", "m3"]


def test_alertmanager_receives_firing_priority_changes_and_resolved(alertmanager):
    url, posts = alertmanager
    bus = InProcessBus(partitions=2)
    p = bus.producer()
    sink = AlertmanagerSink(url, resend_s=3600)
    p.send_batch(topics.ALERTS, [(b"m1", encode(alert("m1", "raised", "medium")))])
    board = follow_alerts(bus, threading.Event(), follow=False, sink=sink)
    assert list(board.open) == ["m1"]
    p.send_batch(
        topics.ALERTS,
        [(b"m1", encode(alert("m1", "updated", "high"))), (b"m1", encode(alert("m1", "cleared", "high")))],
    )
    # A second pass re-reads the topic from the start: the raise is redelivery and is not re-sent.
    follow_alerts(bus, threading.Event(), follow=False, sink=sink, board=board)
    assert board.open == {}
    sent = [a for batch in posts for a in batch]
    summary = [(a["labels"]["severity"], "endsAt" in a) for a in sent]
    # firing medium; then medium resolved + high firing; then high resolved.
    assert summary == [("medium", False), ("medium", True), ("high", False), ("high", True)]
    first = sent[0]
    assert first["labels"] == {
        "alertname": "MotorwatchFailureRisk",
        "asset_id": "m1",
        "kind": "risk",
        "severity": "medium",
    }
    assert first["annotations"]["model_version"] == "v0003"
    assert "vibration_mm_s_mean_1h=9.1" in first["annotations"]["drivers"]
    assert sent[-1]["endsAt"].endswith("Z")


def test_open_alerts_are_resent_and_a_dead_alertmanager_does_not_stop_the_reader(alertmanager):
    url, posts = alertmanager
    board = AlertBoard()
    changes = board.apply([alert("m1", "raised", "high"), alert("m2", "raised", "low")])
    AlertmanagerSink("http://127.0.0.1:9", timeout_s=0.5).deliver(changes, board)  # nothing listens: logged
    sink = AlertmanagerSink(url, resend_s=0.0)
    sink.deliver([], board)  # nothing changed, but the resend is due: every open alert again
    assert sorted(a["labels"]["asset_id"] for a in posts[-1]) == ["m1", "m2"]


@pytest.fixture
def alerts_bus(monkeypatch) -> InProcessBus:
    """`motorwatch alerts` on an in-process bus the test writes to (the command builds its bus from the
    options; here every build returns this one, and close() leaves it open for the next build)."""
    from motorwatch.config import BusConfig

    bus = InProcessBus(partitions=2)
    monkeypatch.setattr(BusConfig, "build", lambda self: bus)
    monkeypatch.setattr(bus, "close", lambda: None)
    return bus


def table_rows(output: str) -> list[str]:
    """The asset column of each rich table row (rows start with the priority)."""
    return [
        line.split("│")[2].strip() for line in output.splitlines() if line.startswith("│ ") and "│ m" in line
    ]


def test_alerts_command_prints_open_alerts_highest_priority_first(alerts_bus):
    from click.testing import CliRunner

    from motorwatch.cli import main

    alerts_bus.producer().send_batch(
        topics.ALERTS,
        [
            (b"m1", encode(alert("m1", "raised", "low", risk=0.7))),
            (b"m2", encode(alert("m2", "raised", "high"))),
            (b"m3", encode(alert("m3", "raised", "medium"))),
            (b"m3", encode(alert("m3", "cleared", "medium"))),
        ],
    )
    result = CliRunner().invoke(main, ["alerts"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "open alerts (2)" in result.output
    assert table_rows(result.output) == ["m2", "m1"]
    assert "vibration_mm_s_mean_1h=9.1 (base 2)" in result.output and "v0003" in result.output


def test_alerts_follow_keeps_the_table_live_until_interrupted(alerts_bus):
    import os
    import signal
    import time

    from click.testing import CliRunner

    from motorwatch.cli import main

    p = alerts_bus.producer()
    p.send_batch(topics.ALERTS, [(b"m1", encode(alert("m1", "raised", "low", risk=0.7)))])

    def later():  # while the command follows: a new alert, an escalation, then Ctrl-C
        time.sleep(0.5)
        p.send_batch(topics.ALERTS, [(b"m2", encode(alert("m2", "raised", "medium")))])
        time.sleep(0.5)
        p.send_batch(topics.ALERTS, [(b"m1", encode(alert("m1", "updated", "high", risk=0.97)))])
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)
    feeder = threading.Thread(target=later)
    feeder.start()
    result = CliRunner().invoke(main, ["alerts", "--follow"], env={"COLUMNS": "200"})
    feeder.join()
    assert result.exit_code == 0, result.output
    assert table_rows(result.output)[-2:] == ["m1", "m2"]  # the last table: m1 escalated to high
    assert "open alerts (2)" in result.output.rsplit("motorwatch", 1)[-1]
    assert signal.getsignal(signal.SIGINT) is before  # the command gave Ctrl-C back


@pytest.mark.kafka
def test_reading_the_alerts_once_on_kafka_waits_for_the_group_before_calling_it_drained(kafka_bootstrap):
    import uuid

    from ingest.kafka_bus import KafkaBus

    topic = f"t{uuid.uuid4().hex[:8]}.{topics.ALERTS}"
    bus = KafkaBus(kafka_bootstrap)
    bus.create_topics([topic], 3)
    producer = bus.producer()
    producer.send_batch(topic, [(a.encode(), encode(alert(a, "raised", "high"))) for a in ("m1", "m2", "m3")])
    producer.flush()
    try:
        board = follow_alerts(bus, threading.Event(), follow=False, topic=topic)
    finally:
        producer.close()
        bus.close()
    assert sorted(board.open) == ["m1", "m2", "m3"]


def test_following_the_alerts_never_holds_back_the_scorer_on_the_in_process_bus():
    """The in-process bus makes producers wait while a group leaves max_backlog messages uncommitted:
    the Alertmanager forwarder (a group of its own, following forever) must not be such a group."""
    bus = InProcessBus(partitions=1, max_backlog=10, block_timeout_s=0.5)
    p = bus.producer()
    stop = threading.Event()
    seen = []
    follower = threading.Thread(
        target=follow_alerts, args=(bus, stop), kwargs={"on_change": lambda b: seen.append(len(b.open))}
    )
    follower.start()
    try:
        for i in range(40):  # four times the backlog, a few at a time as a scorer sends them
            p.send_batch(topics.ALERTS, [(b"m%d" % i, encode(alert(f"m{i}", "raised", "high")))])
            time.sleep(0.02)
    finally:
        stop.set()
        follower.join()
    assert seen and seen[-1] == 40
