"""Helpers for the deploy tests: find the Prometheus tools, run servers on loopback, poll their APIs."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
INSTALL_HINT = "apt-get install -y prometheus prometheus-alertmanager (see .ci/run)"
T = TypeVar("T")


def tool(*names: str) -> str:
    """The path of the first of ``names`` on PATH; fails the test loudly when none is installed."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(f"{' or '.join(names)} not found: {INSTALL_HINT}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check: Callable[[], T | None], what: str, timeout_s: float = 20.0) -> T:
    """Poll ``check`` every 0.2 s until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r})")


def http(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    """One JSON request; returns (status, decoded body) for 2xx and 4xx alike."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    return status, json.loads(raw) if raw.strip().startswith((b"{", b"[")) else raw.decode()


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


@contextmanager
def server(args: list[str], ready_url: str, log: Path, timeout_s: float = 30.0) -> Iterator[subprocess.Popen]:
    """Run a server until the block ends (always stopped); its output goes to ``log``, shown on failure."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout_s
        while not ready(ready_url):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{args[0]} did not become ready at {ready_url}:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
