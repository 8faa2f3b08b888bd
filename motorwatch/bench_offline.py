"""`motorwatch bench offline`: a Parquet log replayed to offline scores (`replay --out`): one process
per core, each scoring the assets of some partitions.

The log is a simulated fleet (200 motors, one reading a minute, sensor faults on) of about ``count``
readings. The model is the registry's latest (``MOTORWATCH_REGISTRY``); with an empty registry, a
small one is trained first on another simulated fleet (outside the timed part).

The same replay then runs with the readings and feature vectors passed between the stages as JSON
(as on Kafka) instead of columns: the baseline of the hand-over, with the same output.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ingest.benchtools import Span, rate_rows
from ingest.profiles import load_profile
from models.registry import Registry
from motorwatch.config import default_registry
from motorwatch.demo import SMALL_MODEL, ensure_model
from motorwatch.offline import score_logs
from simulator.config import FleetConfig
from simulator.writers import simulate_to_files

MOTORS = 200
INTERVAL_S = 60.0


def run(count: int, bus, console) -> list[dict]:
    profile = load_profile("motor")
    with tempfile.TemporaryDirectory(prefix="motorwatch-bench-offline-") as tmp:
        root = Path(tmp)
        registry = default_registry()
        if Registry(registry).latest_version() is None:
            registry = root / "registry"
            ensure_model(registry, profile, SMALL_MODEL, lambda m: console.print(f"  [dim]{m}[/]"))
        days = max(count / (MOTORS * 86400.0 / INTERVAL_S), 0.5)
        fleet = FleetConfig(motors=MOTORS, interval_s=INTERVAL_S, mean_onset_days=20.0)
        simulate_to_files(fleet, 11, root / "log", days * 86400.0)
        console.print(f"  {MOTORS} motors x {days:.1f} days at {INTERVAL_S:g} s; scoring with {registry}")
        rows = []
        for json_between_stages in (False, True):
            with Span() as span:
                out = root / "scores.parquet"
                result = score_logs(
                    [root / "log"],
                    profile,
                    registry,
                    out,
                    on_bad_row=_count_only,
                    progress=False,
                    json_between_stages=json_between_stages,
                )
            n = result.replay.published
            if json_between_stages:
                rows += rate_rows("replay -> offline scores, JSON between the stages", span, n)
            else:
                note = f"{n:,} readings -> {result.scores:,} scores, Parquet in and out"
                note += f", {result.processes} processes"
                rows += rate_rows("replay -> offline scores", span, n, note, ">= 100000")
    return rows


def _count_only(row) -> None:
    """Bad rows (the simulator's spike faults) are counted by the replay; no log line each."""
