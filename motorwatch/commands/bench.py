"""`motorwatch bench [STAGE...]`: run stage benchmarks, print a table, write JSON.

Each stage's benchmark lives in its own package as a function ``run(options) -> list[dict]``;
every row has at least ``benchmark`` and ``value`` and ``unit``, and may add ``target`` and ``note``.
"""

from __future__ import annotations

import importlib
import json
import platform
import time
from pathlib import Path

import click

from motorwatch.config import BusConfig, bus_options, json_option

# stage -> "module:function". A stage not listed here has no benchmark yet.
STAGES: dict[str, str] = {
    "bus": "ingest.bench:run",
    "replay": "ingest.bench_replay:run",
    "score": "scoring.bench:run",
    "models": "models.bench:run",
    "simulate": "simulator.bench:run",
    "features": "features.bench:run",
    "e2e": "motorwatch.bench_e2e:run",
    "offline": "motorwatch.bench_offline:run",
}


@click.command()
@click.argument("stages", nargs=-1, type=click.Choice(sorted(STAGES)))
@click.option("--n", "count", type=int, default=1_000_000, show_default=True, help="Messages per benchmark.")
@json_option("bench.json", "Where to write the figures.")
@bus_options
def cli(stages: tuple[str, ...], count: int, json_path: Path, bus: BusConfig) -> None:
    """Benchmark STAGES (default: all) and write the figures as JSON."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    rows: list[dict] = []
    for stage in stages or tuple(STAGES):
        module, func = STAGES[stage].split(":")
        run = getattr(importlib.import_module(module), func)
        console.print(f"[bold]bench {stage}[/] ...")
        for row in run(count=count, bus=bus, console=console):
            rows.append({"stage": stage, **row})
    table = Table("stage", "benchmark", "value", "unit", "target", "note")
    for r in rows:
        table.add_row(
            r["stage"],
            r["benchmark"],
            f"{r['value']:,.3f}".rstrip("0").rstrip("."),
            r["unit"],
            str(r.get("target", "")),
            str(r.get("note", "")),
        )
    console.print(table)
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": __import__("os").cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "rows": rows,
    }
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"wrote {json_path}")
