"""``motorwatch``: one command per stage. Command modules load on use, so ``--help`` stays fast."""

from __future__ import annotations

import importlib

import click

from motorwatch import __version__

# name -> (module in motorwatch.commands, one-line help). Each module defines a click command `cli`.
COMMANDS: dict[str, str] = {
    "simulate": "Simulate a fleet of motors: to the bus, or to Parquet/CSV logs with ground truth.",
    "replay": "Replay historical logs (CSV, Parquet, C-MAPSS) onto the bus, or score them offline.",
    "features": "Run the feature worker: sensor.readings -> sensor.features.",
    "score": "Run the scorer: sensor.features -> scores, alerts, schedule, metrics.",
    "train": "Train the Random Forest + LSTM ensemble from a historical log into the registry.",
    "evaluate": "Evaluate a registered model on held-out assets.",
    "alerts": "Show active alerts from maintenance.alerts.",
    "demo": "Run the whole pipeline in one process on the embedded bus, with a live console.",
    "bench": "Benchmark the stages and write the figures as a table and JSON.",
    "kafka": "Start, stop or inspect a local single-node Kafka broker (no Docker needed).",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when invoked."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module = importlib.import_module(f"motorwatch.commands.{cmd_name}")
        command: click.Command = module.cli
        command.name = cmd_name
        command.short_help = COMMANDS[cmd_name]
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl(list(COMMANDS.items()))


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="motorwatch")
def main() -> None:
    """motorwatch: predictive maintenance for motor fleets, streaming over Kafka or in one process."""
