"""Real Prometheus and Alertmanager (Debian packages) on loopback, scraping a running motorwatch.

One Alertmanager and one Prometheus per module, both configured from the shipped files
(deploy/prometheus/local.yml with its rules, deploy/alertmanager/alertmanager.yml) with loopback
ports and a 1 s scrape/evaluation interval so the checks take seconds.

The scrape target is ``tests/deploy_target.py`` (motorwatch's real metrics registry).
LEAD: when ``motorwatch demo --metrics-port`` exists, start it in the ``target`` fixture instead
(same job name, ``motorwatch-demo``) and drop deploy_target.py; the fleet alert test then needs a
simulated failure instead of the ``alerts high N`` command.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import yaml
from deploy_tools import DEPLOY, ROOT, free_port, http, server, stop, tool, wait_for

PROM = DEPLOY / "prometheus"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
RULE_GROUPS = {"motorwatch-recording", "motorwatch-fleet", "motorwatch-pipeline"}


@dataclass(frozen=True)
class Target:
    proc: subprocess.Popen
    port: int

    def send(self, command: str) -> None:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "ok"

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as resp:
            return resp.read().decode()


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "deploy_target.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip().isdigit(), f"deploy_target.py did not print its port (exit {proc.poll()})"
        yield Target(proc, int(line))
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("alertmanager")
    port = free_port()
    args = [
        tool("prometheus-alertmanager", "alertmanager"),
        f"--config.file={DEPLOY / 'alertmanager' / 'alertmanager.yml'}",
        f"--storage.path={tmp / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",  # a single instance: no gossip port
    ]
    url = f"http://127.0.0.1:{port}"
    with server(args, f"{url}/-/ready", tmp / "alertmanager.log"):
        yield url


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory, target: Target, alertmanager: str) -> Iterator[str]:
    """The shipped local.yml, pointed at the test's ports, scraping and evaluating every second."""
    tmp = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load((PROM / "local.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(PROM / rule) for rule in config["rule_files"]]
    config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [
        alertmanager.removeprefix("http://")
    ]
    (demo,) = [job for job in config["scrape_configs"] if job["job_name"] == "motorwatch-demo"]
    demo["static_configs"][0]["targets"] = [f"127.0.0.1:{target.port}"]
    config["scrape_configs"] = [demo]
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    args = [
        tool("prometheus"),
        f"--config.file={tmp / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    url = f"http://127.0.0.1:{port}"
    with server(args, f"{url}/-/ready", tmp / "prometheus.log"):
        yield url


def query(prometheus: str, expr: str) -> tuple[int, dict]:
    return http("GET", f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))


def vector(prometheus: str, expr: str) -> list[dict]:
    status, body = query(prometheus, expr)
    assert status == 200, body
    return body["data"]["result"]


def test_live_metrics_pass_promtool_lint(target: Target) -> None:
    text = target.metrics_text()
    assert "motorwatch_scorer_messages_in_total" in text
    result = subprocess.run(
        [tool("promtool"), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_prometheus_scrapes_motorwatch(prometheus: str) -> None:
    up = wait_for(lambda: vector(prometheus, 'up{job="motorwatch-demo"} == 1'), "a successful scrape")
    assert len(up) == 1
    # The dead-letter counter was moved by ingest's real dead-letter path, one reading per reason.
    letters = {
        r["metric"]["reason"]: float(r["value"][1])
        for r in vector(prometheus, 'motorwatch_dead_letters_total{stage="features"}')
    }
    assert letters == {"not_json": 1.0, "missing_field": 1.0}
    assert vector(prometheus, 'motorwatch_scorer_model_info{version="v0001"}')


def test_recording_and_alerting_rules_evaluate(prometheus: str) -> None:
    def rule_groups() -> list[dict] | None:
        groups = http("GET", f"{prometheus}/api/v1/rules")[1]["data"]["groups"]
        rules = [rule for g in groups for rule in g["rules"]]
        return groups if rules and all(rule["health"] == "ok" for rule in rules) else None

    groups = wait_for(rule_groups, "every rule to evaluate without error")
    assert {g["name"] for g in groups} == RULE_GROUPS
    rate = wait_for(lambda: vector(prometheus, "motorwatch:scorer_messages_in:rate1m > 0"), "a recorded rate")
    assert rate[0]["metric"] == {
        "__name__": "motorwatch:scorer_messages_in:rate1m",
        "topic": "sensor.features",
    }
    priorities = {r["metric"]["priority"] for r in vector(prometheus, "motorwatch:alerts_active:sum")}
    assert priorities == {"low", "medium", "high"}
    p99 = wait_for(
        lambda: vector(prometheus, "motorwatch:score_latency_seconds:p99_5m"), "a latency quantile"
    )
    assert 0.025 < float(p99[0]["value"][1]) <= 0.05  # every observation is 40 ms: the 25..50 ms bucket


def am_alerts(alertmanager: str, alertname: str) -> list[dict]:
    status, alerts = http("GET", f"{alertmanager}/api/v2/alerts")
    assert status == 200, alerts
    return [a for a in alerts if a["labels"]["alertname"] == alertname]


def test_fleet_rule_alerts_reach_alertmanager_and_resolve(
    target: Target, prometheus: str, alertmanager: str
) -> None:
    assert not am_alerts(alertmanager, "MotorwatchHighFailureRisk")
    target.send("alerts high 2")
    (alert,) = wait_for(
        lambda: am_alerts(alertmanager, "MotorwatchHighFailureRisk"), "the alert in Alertmanager"
    )
    assert alert["labels"] == {
        "alertname": "MotorwatchHighFailureRisk",
        "severity": "high",
        "component": "fleet",
        "priority": "high",
    }
    assert alert["annotations"]["summary"] == "2 motor(s) at high failure risk"
    assert alert["receivers"] == [{"name": "maintenance-urgent"}]
    target.send("alerts high 0")
    wait_for(lambda: not am_alerts(alertmanager, "MotorwatchHighFailureRisk"), "the alert to resolve")


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expr) for every target of every panel, rows included."""
    found = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        panels = [p for top in dashboard["panels"] for p in [top, *top.get("panels", [])]]
        for panel in panels:
            found += [(path.name, panel["title"], t["expr"]) for t in panel.get("targets", [])]
    return found


def rules(kind: str) -> dict[str, str]:
    """Name -> expression of the shipped recording (``record``) or alerting (``alert``) rules."""
    return {
        rule[kind]: rule["expr"]
        for path in sorted((PROM / "rules").glob("*.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if kind in rule
    }


def metrics_read(expr: str) -> set[str]:
    """The scraped metric names an expression reads, through recording rules (label values stripped)."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    names = set(re.findall(r"\bmotorwatch[a-z0-9_:]*", bare)) | (
        {"up"} if re.search(r"\bup\{", bare) else set()
    )
    recorded = rules("record")
    return {m for n in names for m in (metrics_read(recorded[n]) if n in recorded else {n})}


def exported_names(prometheus: str) -> set[str]:
    wait_for(lambda: vector(prometheus, "motorwatch:alerts_active:sum"), "the recording rules")
    return set(http("GET", f"{prometheus}/api/v1/label/__name__/values")[1]["data"])


def test_every_dashboard_query_parses_and_reads_exported_metrics(prometheus: str) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 10
    exported = exported_names(prometheus)
    problems = []
    for dashboard, title, expr in queries:
        status, body = query(prometheus, expr.replace("$__rate_interval", "1m"))
        if status != 200:
            problems.append(f"{dashboard} / {title}: {body.get('error')}")
        read = metrics_read(expr)
        if not read or read - exported:
            problems.append(
                f"{dashboard} / {title}: reads metrics motorwatch does not export: {read - exported}"
            )
    assert not problems, "\n".join(problems)


def test_every_rule_reads_metrics_motorwatch_exports(prometheus: str) -> None:
    exported = exported_names(prometheus)
    missing = {
        name: metrics_read(expr) - exported
        for kind in ("record", "alert")
        for name, expr in rules(kind).items()
    }
    assert not {name: m for name, m in missing.items() if m}


def publish_alerts(bus, *alerts) -> None:
    from ingest import topics
    from ingest.schemas import encode

    producer = bus.producer()
    producer.send_batch(topics.ALERTS, [(a.asset_id.encode(), encode(a)) for a in alerts])
    producer.flush()


def test_scorer_sink_alerts_reach_alertmanager_route_inhibit_and_resolve(alertmanager: str) -> None:
    """The scorer's direct Alertmanager sink, fed from maintenance.alerts as `motorwatch alerts` feeds it."""
    import threading

    from ingest import topics
    from ingest.inproc import InProcessBus
    from ingest.schemas import Alert, Driver
    from scoring.sinks import AlertBoard, AlertmanagerSink, follow_alerts

    def alert(asset: str, state: str, priority: str, kind: str = "risk") -> Alert:
        return Alert(
            alert_id=f"{asset}-1", asset_id=asset, ts=1.7e9, state=state, priority=priority, kind=kind,
            risk=0.9, rul=20.0, rul_unit="h", model_version="v0001",
            drivers=[Driver(feature="vibration_mm_s_mean_1h", value=7.1, baseline=2.0, contribution=0.4)],
        )  # fmt: skip

    bus = InProcessBus()
    bus.create_topics([topics.ALERTS], partitions=2)
    board, sink, stop = AlertBoard(), AlertmanagerSink(alertmanager), threading.Event()

    def deliver(*alerts: Alert) -> None:
        publish_alerts(bus, *alerts)
        follow_alerts(bus, stop, follow=False, sink=sink, board=board)

    def in_am(asset: str) -> list[dict]:
        return [
            a for a in am_alerts(alertmanager, "MotorwatchFailureRisk") if a["labels"]["asset_id"] == asset
        ]

    deliver(alert("m00007", "raised", "high"), alert("m00008", "raised", "medium"))
    (high,) = wait_for(lambda: in_am("m00007"), "the sink's alert in Alertmanager")
    assert high["labels"] == {"alertname": "MotorwatchFailureRisk", "asset_id": "m00007", "kind": "risk",
                              "severity": "high"}  # fmt: skip
    assert high["receivers"] == [{"name": "maintenance-urgent"}]
    assert high["status"]["state"] == "active"
    assert "vibration_mm_s_mean_1h" in high["annotations"]["drivers"]
    (medium,) = wait_for(lambda: in_am("m00008"), "the medium alert")
    assert medium["receivers"] == [{"name": "maintenance"}]

    # A fleet flood stands for the medium and low motor alerts (inhibit rule), not the high ones.
    deliver(alert("fleet", "raised", "high", kind="flood"))
    wait_for(lambda: [a for a in in_am("m00008") if a["status"]["state"] == "suppressed"], "inhibition")
    assert in_am("m00007")[0]["status"]["state"] == "active"

    deliver(alert("fleet", "cleared", "high", kind="flood"), alert("m00007", "cleared", "high"))
    wait_for(lambda: not in_am("m00007") and not in_am("fleet"), "the cleared alerts to resolve")
    wait_for(
        lambda: [a for a in in_am("m00008") if a["status"]["state"] == "active"], "the inhibition to end"
    )
