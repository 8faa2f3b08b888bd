"""The shipped Prometheus and Alertmanager configs, checked and unit-tested with the real tools."""

from __future__ import annotations

import subprocess

import pytest
import yaml
from deploy_tools import DEPLOY, tool

PROM = DEPLOY / "prometheus"
RULE_FILES = sorted((PROM / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROM / "tests").glob("*_test.yml"))
AM_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("config", ["prometheus.yml", "local.yml"])
def test_prometheus_config_and_its_rules_are_valid(config: str) -> None:
    result = run(tool("promtool"), "check", "config", str(PROM / config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(RULE_FILES)} rule files found" in result.stdout


def test_rule_files_are_valid() -> None:
    result = run(tool("promtool"), "check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_unit_tested_and_routable() -> None:
    """Each alerting rule appears in a promtool test, and carries the labels Alertmanager routes on."""
    alerts = [
        rule
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]
    tested = {
        case["alertname"]
        for path in RULE_TESTS
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert {a["alert"] for a in alerts} <= tested
    for alert in alerts:
        assert alert["labels"]["severity"] in {"high", "medium"}, alert["alert"]
        assert alert["labels"]["component"] in {"fleet", "pipeline"}, alert["alert"]
        assert {"summary", "description"} <= alert["annotations"].keys(), alert["alert"]


@pytest.mark.parametrize("unit_test", RULE_TESTS, ids=lambda p: p.name)
def test_promtool_rule_unit_tests_pass(unit_test) -> None:
    result = run(tool("promtool"), "test", "rules", str(unit_test))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_alertmanager_config_is_valid() -> None:
    result = run(tool("amtool"), "check-config", str(AM_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        # The scorer's direct sink (scoring/sinks.py): one alert per motor, severity = priority.
        (
            ["alertname=MotorwatchFailureRisk", "asset_id=m00042", "kind=risk", "severity=high"],
            "maintenance-urgent",
        ),
        (["alertname=MotorwatchFailureRisk", "asset_id=m00042", "kind=risk", "severity=low"], "maintenance"),
        (
            ["alertname=MotorwatchFailureRisk", "asset_id=fleet", "kind=flood", "severity=high"],
            "maintenance-urgent",
        ),
        # Prometheus rules.
        (
            ["alertname=MotorwatchHighFailureRisk", "severity=high", "component=fleet", "priority=high"],
            "maintenance-urgent",
        ),
        (
            [
                "alertname=MotorwatchMediumFailureRisk",
                "severity=medium",
                "component=fleet",
                "priority=medium",
            ],
            "maintenance",
        ),
        (["alertname=MotorwatchNoReadings", "severity=high", "component=pipeline"], "pipeline-oncall"),
    ],
)
def test_alerts_route_to_the_right_team(labels: list[str], receiver: str) -> None:
    result = run(tool("amtool"), "config", "routes", "test", f"--config.file={AM_CONFIG}", *labels)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == [receiver]
