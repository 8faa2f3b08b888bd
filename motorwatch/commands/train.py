"""`motorwatch train --profile NAME --data LOG [--quick]`: train the ensemble into the model registry."""

from __future__ import annotations

from pathlib import Path

import click

from motorwatch.config import profile_option, registry_option


@click.command()
@profile_option
@click.option(
    "--data",
    "data",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="A simulator log directory (readings + events) or a NASA C-MAPSS train_*.txt file.",
)
@click.option("--quick", is_flag=True, help="The demo configuration: small models, well under a minute.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split and the models.")
@registry_option
def cli(profile: str, data: Path, quick: bool, seed: int, registry: Path) -> None:
    """Train the Random Forest + LSTM ensemble on DATA, evaluate it on held-out assets, register it."""
    from rich.console import Console

    from features.spec import FeatureSpec
    from ingest.profiles import load_profile
    from models.registry import Registry
    from models.report import metrics_table
    from models.training import TrainConfig, train

    console = Console()
    prof = load_profile(profile)
    config = TrainConfig.quick(seed) if quick else TrainConfig.for_profile(prof, seed)
    result = train(
        data, prof, FeatureSpec.from_profile(prof), config, log=lambda m: console.print(f"[dim]{m}[/]")
    )
    version = Registry(registry).save(result.bundle, result.card)
    console.print(metrics_table(result.card.metrics, f"{version}: test assets ({len(result.split.test)})"))
    console.print(f"registered [bold]{version}[/] in {registry} ({result.card.training_time_s:.1f} s)")
