"""How CLI commands end on errors: one message on stderr and a stable exit code."""

from __future__ import annotations

import typer

from clawhq.errors import ClawHQError, ConfigError
from clawhq.settings import Settings, load_settings

CONFIG_EXIT = 2
FAILURE_EXIT = 1


def settings_or_exit(**overrides: object) -> Settings:
    """The settings, or exit 2 with the message that names the bad variable."""
    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        typer.echo(f"clawhq: {exc.message}", err=True)
        raise typer.Exit(CONFIG_EXIT) from None


def fail(exc: ClawHQError) -> typer.Exit:
    """Print the error; the caller raises what this returns (exit 1)."""
    typer.echo(f"clawhq: {exc.message}", err=True)
    return typer.Exit(FAILURE_EXIT)
