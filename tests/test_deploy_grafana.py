"""Grafana provisioning and dashboards: loadable by file provisioning, and showing what operators need.

That every panel's PromQL parses and reads only metrics motorwatch exports is checked against a live
Prometheus in test_deploy_live.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from deploy_tools import DEPLOY

GRAFANA = DEPLOY / "grafana"
DASHBOARDS = {p.stem: p for p in sorted((GRAFANA / "dashboards").glob("*.json"))}


def datasource() -> dict:
    (ds,) = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    return ds


def panels(path: Path) -> list[dict]:
    return [p for top in json.loads(path.read_text())["panels"] for p in [top, *top.get("panels", [])]]


def test_datasource_has_a_fixed_uid() -> None:
    ds = datasource()
    assert ds["type"] == "prometheus" and ds["uid"] == "motorwatch-prometheus"


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_panels_reference_the_provisioned_datasource_by_uid(name: str) -> None:
    path = DASHBOARDS[name]
    assert "${DS_" not in path.read_text()  # UI-import placeholders break under file provisioning
    expected = {"type": "prometheus", "uid": datasource()["uid"]}
    for panel in panels(path):
        assert panel["datasource"] == expected, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == expected, panel["title"]
            assert target["expr"].strip(), panel["title"]


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboard_layout_is_well_formed(name: str) -> None:
    dashboard = json.loads(DASHBOARDS[name].read_text())
    assert dashboard["uid"] == f"motorwatch-{name}"
    ps = panels(DASHBOARDS[name])
    assert len({p["id"] for p in ps}) == len(ps)
    for p in ps:
        grid = p["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, p["title"]


FLEET_VIEWS = {
    "Risk distribution",
    "Top riskiest assets",
    "Active alerts by priority",
    "Maintenance schedule",
}
PIPELINE_VIEWS = {
    "Throughput per stage",
    "Reading-to-score latency",
    "Consumer lag",
    "Dead letters by reason",
    "Model version",
}


@pytest.mark.parametrize(("name", "titles"), [("fleet", FLEET_VIEWS), ("pipeline", PIPELINE_VIEWS)])
def test_dashboards_have_the_views_operators_need(name: str, titles: set[str]) -> None:
    present = {p["title"] for p in panels(DASHBOARDS[name])}
    assert all(any(t == title or title.startswith(t) for title in present) for t in titles), present


def test_dashboard_provider_points_at_the_dashboards_folder() -> None:
    (provider,) = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "motorwatch.yml").read_text())[
        "providers"
    ]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/motorwatch"
