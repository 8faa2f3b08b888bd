"""motorwatch.forked: one call of a function in this process and one in each forked child."""

from __future__ import annotations

import os
import threading
import time

import pytest

from motorwatch.forked import in_processes


def test_results_come_back_in_call_order_from_the_processes_that_made_them() -> None:
    results = in_processes(3, lambda k: (k, os.getpid(), [k] * 1_000_000))
    assert [k for k, _, _ in results] == [0, 1, 2]
    assert results[0][1] == os.getpid() and len({pid for _, pid, _ in results}) == 3
    assert all(big == [k] * 1_000_000 for k, _, big in results)  # larger than a pipe's buffer


def test_a_childs_exception_is_raised_here_with_its_traceback() -> None:
    def run(k: int) -> int:
        if k == 2:
            raise KeyError("no such motor")
        return k

    with pytest.raises(KeyError, match="no such motor") as raised:
        in_processes(3, run)
    cause = str(raised.value.__cause__)
    assert "in process motorwatch-shard-2" in cause and "raise KeyError" in cause


def test_a_child_that_dies_without_a_result_is_an_error() -> None:
    def run(k: int) -> int:
        if k == 1:
            os._exit(3)
        return k

    with pytest.raises(ChildProcessError, match="motorwatch-shard-1 exited with code 3"):
        in_processes(2, run)


def test_a_result_that_cannot_be_pickled_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="pickle"):
        in_processes(2, lambda k: threading.Lock())


def test_a_failure_here_stops_the_children() -> None:
    def run(k: int) -> int:
        if k == 0:
            raise ValueError("bad log")
        time.sleep(60)
        return k

    started = time.monotonic()
    with pytest.raises(ValueError, match="bad log"):
        in_processes(3, run)
    assert time.monotonic() - started < 30
