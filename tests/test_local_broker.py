"""The local broker launcher behind ``motorwatch kafka start|stop|status``."""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from ingest import local_broker
from ingest.kafka_bus import KafkaBus
from motorwatch.cli import main


def kafka(*args: str) -> tuple[int, str]:
    """Exit code and stdout (the bootstrap address) of ``motorwatch kafka ARGS``; why it failed on stderr."""
    result = CliRunner().invoke(main, ["kafka", *args])
    if result.exit_code not in (0, 1) or (result.exit_code == 1 and args[0] != "status"):
        print(result.stderr, repr(result.exception))  # pytest shows it with the failure
    return result.exit_code, result.stdout.strip()


def test_status_without_a_broker_says_so_and_exits_1(tmp_path: Path) -> None:
    assert kafka("status", "--state-dir", str(tmp_path)) == (1, "")
    assert local_broker.status(tmp_path) is None


@pytest.mark.kafka
def test_start_status_stop_round_trip_from_the_cli(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    code, bootstrap = kafka("start", "--state-dir", state)
    try:
        assert code == 0, bootstrap
        info = local_broker.status(Path(state))
        assert info is not None and bootstrap == info.bootstrap == f"127.0.0.1:{info.port}"
        assert kafka("status", "--state-dir", state) == (0, bootstrap)
        assert kafka("start", "--state-dir", state) == (0, bootstrap), (
            "a second start finds the running broker"
        )
        assert local_broker.status(Path(state)).pid == info.pid
        bus = KafkaBus(bootstrap)  # a real broker: it answers metadata requests
        bus.create_topics(["lifecycle.check"], 2)
        assert bus.partitions("lifecycle.check") == 2
        bus.close()
    finally:
        kafka("stop", "--state-dir", state)
    assert kafka("status", "--state-dir", state)[0] == 1
    assert not Path(f"/proc/{info.pid}").exists(), "the JVM is gone"
    assert not Path(info.work_dir).exists(), "its data is removed"
    assert "lifecycle.check" in Path(info.log).read_text(), "the log survives stop and shows the topic"


def test_a_broker_that_cannot_start_fails_fast_with_kafkas_reason(tmp_path: Path, monkeypatch) -> None:
    deploy = tmp_path / "deploy"
    shutil.copytree(local_broker.deploy_dir(), deploy)
    props = deploy / "server.properties"
    props.write_text(props.read_text().replace("num.io.threads=2", "num.io.threads=not-a-number"))
    monkeypatch.setenv("MOTORWATCH_KAFKA_DEPLOY", str(deploy))
    with pytest.raises(local_broker.BrokerError, match=r"num\.io\.threads"):
        local_broker.start(tmp_path / "state")
    assert local_broker.status(tmp_path / "state") is None
    assert not (tmp_path / "state" / "work").exists()


def test_deploy_dir_is_found_in_the_checkout_or_from_the_environment(tmp_path: Path, monkeypatch) -> None:
    assert (local_broker.deploy_dir() / "server.properties").is_file()
    monkeypatch.setenv("MOTORWATCH_KAFKA_DEPLOY", os.fspath(tmp_path))
    with pytest.raises(local_broker.BrokerError, match="MOTORWATCH_KAFKA_DEPLOY"):
        local_broker.deploy_dir()


def test_cluster_ids_never_start_with_a_dash(monkeypatch) -> None:
    """kafka-storage reads an id starting with '-' as an option: the broker failed to start 1 time in 64."""
    draws = iter([b"\xf8" + bytes(15), b"\x04" + bytes(15)])  # encode to '-A...', then 'BA...'
    monkeypatch.setattr(local_broker.os, "urandom", lambda n: next(draws))
    cluster_id = local_broker.new_cluster_id()
    assert cluster_id == "BA" + "A" * 20
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
