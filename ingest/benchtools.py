"""Timing for the stage benchmarks: wall-clock and CPU seconds of a block of work, and the load.

The machine benchmarks run on is shared, so a wall-clock rate drops when others work; the rate per
CPU-second of this process (all its threads) is the per-core figure, which load changes far less.
Every benchmark reports both.

>>> with Span() as span:
...     total = sum(range(1000))
>>> span.wall >= 0 and span.cpu >= 0
True
>>> rate(10, 0.0)
inf
"""

from __future__ import annotations

import math
import os
import time


def rate(n: int, seconds: float) -> float:
    """``n`` per second (infinite if no time was measured)."""
    return n / seconds if seconds > 0 else math.inf


def cpu_seconds() -> float:
    """CPU seconds of this process (all threads) and of the child processes it has waited for."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Span:
    """Wall-clock and CPU seconds (:func:`cpu_seconds`): from creation (or ``with`` entry) to
    :meth:`stop` (or exit)."""

    def __init__(self) -> None:
        self.start()

    def start(self) -> Span:
        self.wall, self.cpu = -time.perf_counter(), -cpu_seconds()
        return self

    def stop(self) -> Span:
        self.wall += time.perf_counter()
        self.cpu += cpu_seconds()
        return self

    def __enter__(self) -> Span:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __add__(self, other: Span) -> Span:
        out = Span()
        out.wall, out.cpu = self.wall + other.wall, self.cpu + other.cpu
        return out

    def rates(self, n: int) -> tuple[float, float]:
        """``(per wall-clock second, per CPU-second)`` for ``n`` items."""
        return rate(n, self.wall), rate(n, self.cpu)

    def per_cpu(self, n: int) -> str:
        """The CPU-second rate for a benchmark's note: ``"1,234/CPU-s"``."""
        return f"{rate(n, self.cpu):,.0f}/CPU-s"


def load_note() -> str:
    """The machine's load for a note beside a wall-clock figure."""
    return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


def rate_rows(
    benchmark: str, span: Span, n: int, note: str = "", target: str | None = None, unit: str = "readings"
) -> list[dict]:
    """Two benchmark rows for ``n`` items done in ``span``: per wall-clock second (with the load in
    its note), then per CPU-second (one core's worth, whatever else runs). ``target`` applies to both."""
    wall, cpu = span.rates(n)
    goal = {"target": target} if target else {}
    return [
        {
            "benchmark": benchmark,
            "value": wall,
            "unit": f"{unit}/s",
            **goal,
            "note": "; ".join(part for part in (note, load_note()) if part),
        },
        {
            "benchmark": f"{benchmark} per CPU-second",
            "value": cpu,
            "unit": f"{unit}/cpu-s",
            **goal,
            "note": "CPU time of this process and its child processes, all threads",
        },
    ]
