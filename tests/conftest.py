"""Shared fixtures. Kafka tests get a real broker: never skipped, they fail when it is missing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# The broker CI started, read once: the variable is then hidden from every test (below), so a CLI run
# inside a test never picks Kafka up from the environment; tests that want Kafka ask for it.
_BOOTSTRAP = os.environ.get("MOTORWATCH_BOOTSTRAP")


@pytest.fixture(autouse=True)
def _no_bootstrap_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MOTORWATCH_BOOTSTRAP", raising=False)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a real Kafka broker: ``$MOTORWATCH_BOOTSTRAP`` if set (CI starts one with
    ``motorwatch kafka start``), else a local broker started for this test session."""
    if _BOOTSTRAP:
        yield _BOOTSTRAP
        return
    from ingest import local_broker

    state_dir = tmp_path_factory.mktemp("kafka")  # this session's own broker, whatever else runs
    try:
        info = local_broker.start(state_dir)
    except local_broker.BrokerError as exc:
        pytest.fail(f"no Kafka broker for the Kafka tests: {exc}", pytrace=False)
    yield info.bootstrap
    local_broker.stop(state_dir)


@pytest.fixture(scope="session")
def demo_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry holding a first model trained the demo's way (a simulated history, the quick
    configuration) for the small fleet of tests/demo_model.py; shared by the tests that run the demo."""
    from demo_model import MOTOR, SMALL

    from motorwatch.demo import ensure_model

    root = tmp_path_factory.mktemp("demo") / "registry"
    lines: list[str] = []
    assert ensure_model(root, MOTOR, SMALL, lines.append) == "v0001"
    assert any("trained and registered v0001" in m for m in lines), lines
    return root
