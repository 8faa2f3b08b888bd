"""A stand-in for a stage that is not built yet: it says so and exits non-zero."""

from __future__ import annotations

import click


def pending(name: str, issue: str) -> click.Command:
    @click.command(name=name, context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def cli(args: tuple[str, ...]) -> None:
        raise click.ClickException(f"'motorwatch {name}' is not built yet ({issue}).")

    return cli
