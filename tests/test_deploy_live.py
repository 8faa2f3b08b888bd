"""Real Prometheus and Alertmanager (Debian packages) on loopback, scraping a running `motorwatch demo`.

One demo process, one Alertmanager and one Prometheus per module, the servers configured from the
shipped files (deploy/prometheus/local.yml with its rules, deploy/alertmanager/alertmanager.yml) with
loopback ports and a 1 s scrape/evaluation interval so the checks take seconds. The demo (simulator,
feature worker and scorer in one process, so one /metrics for both workers) runs the small fleet of
tests/demo_model.py at a simulated day per second with the session's pre-trained model: readings,
sensor faults (dead letters), scores and alerts are the pipeline's own.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from demo_model import SMALL
from deploy_tools import DEPLOY, free_port, http, server, tool, wait_for
from prometheus_client.parser import text_string_to_metric_families

from ingest.schemas import Reason

PROM = DEPLOY / "prometheus"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
RULE_GROUPS = {"motorwatch-recording", "motorwatch-fleet", "motorwatch-pipeline"}
JOB = "motorwatch-demo"  # local.yml's job for the demo's one port
# Series that exist only once the stream has moved them (labelled counters, top-K gauges).
STREAM_SERIES = (
    "motorwatch_features_readings_total{",
    "motorwatch_dead_letters_total{",
    "motorwatch_asset_risk_top{",
)


@dataclass(frozen=True)
class Target:
    port: int

    def metrics_text(self) -> str:
        return metrics_of(self.port)

    def streaming_metrics(self) -> str:
        """The /metrics text once readings, dead letters and scores have all moved it."""

        def moved() -> str | None:
            text = self.metrics_text()
            return text if all(series in text for series in STREAM_SERIES) else None

        return wait_for(moved, "the demo's stream to reach its metrics", timeout_s=60)


def motorwatch_cli() -> str:
    cli = shutil.which("motorwatch")
    assert cli, "the motorwatch CLI is not on PATH: pip install -e ."
    return cli


@pytest.fixture(scope="module")
def target(demo_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """`motorwatch demo` in its own process on the embedded bus, /metrics on a free loopback port."""
    tmp = tmp_path_factory.mktemp("demo")
    port = free_port()
    args = [motorwatch_cli(), "demo", "--bus", "inproc", "--no-live", "--duration", "600", "--seed", "7"]
    args += ["--motors", str(SMALL.motors), "--speed", "86400", "--metrics-port", str(port)]
    args += ["--registry", str(demo_registry), "--schedule", str(tmp / "schedule.csv")]
    with server(args, f"http://127.0.0.1:{port}/metrics", tmp / "demo.log", timeout_s=60):
        yield Target(port)


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
    (demo,) = [job for job in config["scrape_configs"] if job["job_name"] == JOB]
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


def promtool_lint(text: str) -> None:
    result = subprocess.run(
        [tool("promtool"), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def metrics_of(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def test_live_metrics_pass_promtool_lint(target: Target) -> None:
    """Both workers' series as they stream (the demo serves the feature worker's and the scorer's)."""
    promtool_lint(target.streaming_metrics())


@pytest.mark.parametrize(
    ("stage", "family"), [("features", "features_readings"), ("score", "scorer_messages_in")]
)
def test_each_worker_process_serves_lint_free_metrics(
    stage: str, family: str, demo_registry: Path, tmp_path: Path
) -> None:
    """A worker on its own (as compose and local.yml run them) serves /metrics that promtool accepts."""
    port = free_port()
    args = [motorwatch_cli(), stage, "--bus", "inproc", "--metrics-port", str(port), "--duration", "120"]
    args += ["--registry", str(demo_registry)] if stage == "score" else []
    with server(args, f"http://127.0.0.1:{port}/metrics", tmp_path / f"{stage}.log", timeout_s=60):
        text = metrics_of(port)
    assert f"# TYPE motorwatch_{family}_total counter" in text
    promtool_lint(text)


def scraped_names(target: Target, prometheus: str) -> set[str]:
    """Every series name Prometheus holds (recorded ones included), once it holds every sample name
    the demo serves after its stream has started."""
    served = {
        sample.name
        for family in text_string_to_metric_families(target.streaming_metrics())
        for sample in family.samples
    }

    def names() -> set[str] | None:
        held = set(http("GET", f"{prometheus}/api/v1/label/__name__/values")[1]["data"])
        return held if held >= served else None

    return wait_for(names, f"Prometheus to hold every series {JOB} serves")


def test_prometheus_scrapes_every_series_motorwatch_serves(target: Target, prometheus: str) -> None:
    (up,) = wait_for(lambda: vector(prometheus, f'up{{job="{JOB}"}} == 1'), "a successful scrape")
    assert up["metric"]["instance"] == f"127.0.0.1:{target.port}"
    assert {n for n in scraped_names(target, prometheus) if n.startswith("motorwatch_features_")}
    assert vector(prometheus, f'motorwatch_scorer_model_info{{job="{JOB}", version="v0001"}}')
    # The simulator's sensor faults reach Prometheus as the feature worker's dead letters, by reason.
    letters = vector(prometheus, f'motorwatch_dead_letters_total{{job="{JOB}"}} > 0')
    assert letters and {r["metric"]["stage"] for r in letters} == {"features"}
    assert {r["metric"]["reason"] for r in letters} <= {reason.value for reason in Reason}


def rule_states(prometheus: str) -> dict[str, dict] | None:
    """Rule name -> rule as Prometheus reports it, once every rule has evaluated without error."""
    groups = http("GET", f"{prometheus}/api/v1/rules")[1]["data"]["groups"]
    found = {r["name"]: r | {"group": g["name"]} for g in groups for r in g["rules"]}
    return found if found and all(r["health"] == "ok" for r in found.values()) else None


def test_recording_and_alerting_rules_evaluate(prometheus: str) -> None:
    rules_now = wait_for(lambda: rule_states(prometheus), "every rule to evaluate without error")
    assert {r["group"] for r in rules_now.values()} == RULE_GROUPS
    assert set(rules_now) == set(rules("record")) | set(rules("alert"))

    def positive(expr: str) -> list[dict]:
        return wait_for(lambda: vector(prometheus, f"{expr} > 0"), expr)

    assert positive('motorwatch:features_readings:rate1m{outcome="processed"}')
    assert positive('motorwatch:features_emitted:rate1m{kind="vector"}')
    assert positive('motorwatch:scorer_messages_in:rate1m{topic="sensor.features"}')
    assert positive('motorwatch:scorer_messages_out:rate1m{topic="maintenance.scores"}')
    assert {r["metric"]["reason"] for r in positive("motorwatch:dead_letters:rate5m")}
    assert positive("motorwatch:features_batch_seconds:p99_5m")
    assert vector(prometheus, "motorwatch:score_latency_seconds:p99_5m")
    priorities = {r["metric"]["priority"] for r in vector(prometheus, "motorwatch:alerts_active:sum")}
    assert priorities == {"low", "medium", "high"}
    lag = vector(prometheus, 'motorwatch:consumer_lag:sum{topic="sensor.features"}')
    assert [r["metric"]["job"] for r in lag] == [JOB]  # lag aggregates by job: the demo's
    # A streaming, scraped pipeline: its health alerts evaluate and stay quiet.
    for name in ("MotorwatchNoReadings", "MotorwatchTargetDown"):
        assert rule_states(prometheus)[name]["state"] == "inactive", name


def am_alerts(alertmanager: str, alertname: str) -> list[dict]:
    status, alerts = http("GET", f"{alertmanager}/api/v2/alerts")
    assert status == 200, alerts
    return [a for a in alerts if a["labels"]["alertname"] == alertname]


FLEET_RULE_ALERTS = {"high": "MotorwatchHighFailureRisk", "medium": "MotorwatchMediumFailureRisk"}
RECEIVERS = {"high": "maintenance-urgent", "medium": "maintenance"}


def test_fleet_rule_alerts_reach_alertmanager_and_resolve(prometheus: str, alertmanager: str) -> None:
    """A simulated motor degrades, the scorer opens an alert, the fleet rule fires into Alertmanager;
    the alert closes (maintenance, or the policy's hysteresis) and resolves there."""

    def fleet_alerts() -> list[dict]:
        return [a for name in FLEET_RULE_ALERTS.values() for a in am_alerts(alertmanager, name)]

    alert = wait_for(fleet_alerts, "a fleet alert from the rules in Alertmanager", timeout_s=90)[0]
    priority = alert["labels"]["priority"]
    assert alert["labels"] == {
        "alertname": FLEET_RULE_ALERTS[priority],
        "severity": priority,
        "component": "fleet",
        "priority": priority,
    }
    assert re.fullmatch(rf"\d+ motor\(s\) at {priority} failure risk", alert["annotations"]["summary"])
    assert alert["receivers"] == [{"name": RECEIVERS[priority]}]
    wait_for(
        lambda: alert["fingerprint"] not in {a["fingerprint"] for a in fleet_alerts()},
        "the fleet alert to resolve",
        timeout_s=90,
    )


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


def test_every_dashboard_query_parses_and_reads_exported_metrics(target: Target, prometheus: str) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 10
    exported = scraped_names(target, prometheus)
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


def test_every_rule_reads_metrics_motorwatch_exports(target: Target, prometheus: str) -> None:
    exported = scraped_names(target, prometheus)
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
