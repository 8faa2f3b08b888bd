"""`motorwatch evaluate`: score a registered model on its held-out test assets; print a table, write JSON."""

from __future__ import annotations

import json
from pathlib import Path

import click

from motorwatch.config import json_option, profile_option, registry_option


@click.command()
@profile_option
@click.option(
    "--data",
    "data",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="The log to evaluate on [default: the file the model was trained on, from its card].",
)
@click.option("--version", "version", default=None, help="Registered version [default: latest].")
@json_option("evaluation.json", "Where to write the metrics.")
@registry_option
def cli(profile: str, data: Path | None, version: str | None, json_path: Path, registry: Path) -> None:
    """Evaluate each model and the ensemble on the test assets of the model's split."""
    from rich.console import Console

    from features.spec import FeatureSpec
    from ingest.profiles import load_profile
    from models.registry import Registry
    from models.report import evaluate_version, metrics_table

    console = Console()
    prof = load_profile(profile)
    try:
        metrics, version = evaluate_version(
            Registry(registry), prof, FeatureSpec.from_profile(prof), data, version
        )
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    console.print(metrics_table(metrics, f"{version}: test assets ({metrics['assets']})"))
    json_path.write_text(json.dumps(metrics, indent=2, default=float) + "\n")
    console.print(f"wrote {json_path}")
