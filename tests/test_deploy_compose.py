"""deploy/docker-compose.yml: valid for docker-compose, and consistent with the rest of motorwatch.

No Docker engine runs here; ``docker-compose config`` (Debian's docker-compose) parses and validates
the file against the compose schema without one. The cross-checks catch drift between the compose
file, the Prometheus/Grafana configs, the topic list and the CLI.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import click
import pytest
import yaml
from deploy_tools import DEPLOY, ROOT, tool

from ingest import topics
from motorwatch.cli import main as motorwatch_cli

COMPOSE = DEPLOY / "docker-compose.yml"
PIPELINE = ("simulator", "features", "scorer", "train")


@pytest.fixture(scope="module")
def compose() -> dict:
    """The compose file as docker-compose resolves it (anchors merged, paths absolute), all profiles on."""
    args = [
        tool("docker-compose"),
        "-f",
        str(COMPOSE),
        "--profile",
        "simulator",
        "--profile",
        "train",
        "config",
    ]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_compose_runs_the_whole_stack(compose: dict) -> None:
    assert set(compose["services"]) >= {
        "kafka", "kafka-init", "simulator", "features", "scorer", "prometheus", "alertmanager", "grafana",
    }  # fmt: skip
    assert compose["services"]["kafka"]["image"].startswith("apache/kafka:")
    assert compose["services"]["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    assert compose["services"]["simulator"]["profiles"] == ["simulator"]


def test_topic_init_creates_every_topic_motorwatch_uses(compose: dict) -> None:
    script = "\n".join(compose["services"]["kafka-init"]["command"])
    created = {line.split()[1] for line in script.splitlines() if line.strip().startswith("create ")}
    assert created == set(topics.ALL)


def invocations(service: dict) -> list[list[str]]:
    """The motorwatch command lines a service runs: its command, or each `motorwatch ...` of its script."""
    if service.get("entrypoint") == ["/bin/sh", "-c"]:
        lines = [shlex.split(part) for part in " ".join(service["command"]).split("&&")]
        return [line[1:] for line in lines if line[0] == "motorwatch"]
    return [service["command"]]


def parse_with_the_real_cli(argv: list[str]) -> None:
    """Parse a motorwatch command line (``kafka start`` style subcommands too) without running it;
    raises on an unknown command or a bad option. A path that must exist but does so only inside a
    container is fine."""
    ctx = click.Context(motorwatch_cli, info_name="motorwatch")
    name, *args = argv
    command = motorwatch_cli.get_command(ctx, name)
    if isinstance(command, click.Group):
        ctx = click.Context(command, info_name=name, parent=ctx)
        name, *args = args
        command = command.get_command(ctx, name)
    assert command is not None, argv
    try:
        command.make_context(name, args, parent=ctx)
    except click.BadParameter as exc:
        if not (isinstance(exc.param.type, click.Path) and exc.param.type.exists):
            raise


@pytest.mark.parametrize("service", PIPELINE)
def test_pipeline_commands_parse_with_the_real_cli(compose: dict, service: str) -> None:
    runs = invocations(compose["services"][service])
    assert runs
    for argv in runs:
        parse_with_the_real_cli(argv)
    assert compose["services"][service]["build"]["dockerfile"] == "deploy/Dockerfile"


def readme_commands() -> list[list[str]]:
    """Every `motorwatch ...` command of deploy/README.md's shell blocks (also inside ``$(...)``)."""
    blocks = re.findall(r"```bash\n(.*?)```", (DEPLOY / "README.md").read_text(), re.S)
    found = []
    for line in "\n".join(blocks).replace("\\\n", " ").splitlines():
        code = line.split(" #")[0]
        for part in re.split(r"&&|\$\(|\)|&\s*$", code):
            words = shlex.split(part)
            if words and words[0] == "motorwatch":
                found.append(words[1:])
    return found


def test_readme_commands_parse_with_the_real_cli() -> None:
    commands = readme_commands()
    assert {c[0] for c in commands} >= {"demo", "kafka", "simulate", "features", "score", "alerts"}
    for argv in commands:
        parse_with_the_real_cli(argv)


def test_prometheus_scrapes_each_stage_on_its_metrics_port(compose: dict) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    scraped = {
        (sd["names"][0], sd["port"])
        for job in config["scrape_configs"]
        for sd in job.get("dns_sd_configs", [])
    }
    served = {
        (name, int(option(svc["command"], "--metrics-port")))
        for name, svc in compose["services"].items()
        if "--metrics-port" in svc.get("command", [])
    }
    assert scraped == served == {("features", 9401), ("scorer", 9402)}
    (am,) = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert am == "alertmanager:9093"
    scorer_am = urlparse(option(compose["services"]["scorer"]["command"], "--alertmanager"))
    assert scorer_am.netloc == am


def mounts(service: dict) -> dict[str, Path]:
    """Container path -> host path of a service's bind mounts."""
    out = {}
    for volume in service["volumes"]:
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume["source"], volume["target"]
        if source.startswith("/"):
            out[target] = Path(source)
    return out


def test_config_folders_are_mounted_where_each_server_reads_them(compose: dict) -> None:
    services = compose["services"]
    assert mounts(services["prometheus"])["/etc/prometheus"] == DEPLOY / "prometheus"
    assert mounts(services["alertmanager"])["/etc/alertmanager"] == DEPLOY / "alertmanager"
    grafana = mounts(services["grafana"])
    assert grafana["/etc/grafana/provisioning"] == DEPLOY / "grafana" / "provisioning"
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/motorwatch.yml").read_text())
    assert grafana[provider["providers"][0]["options"]["path"]] == DEPLOY / "grafana" / "dashboards"
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert urlparse(datasource["datasources"][0]["url"]).netloc == "prometheus:9090"
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (DEPLOY / "grafana" / "dashboards" / Path(home).name).is_file()


def test_dockerfile_copies_every_package_and_installs_the_cli() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    copied = {line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ")}
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert packages <= copied
    assert all((ROOT / path).exists() for path in copied)
    assert 'ENTRYPOINT ["motorwatch"]' in dockerfile
