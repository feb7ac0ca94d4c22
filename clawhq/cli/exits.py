"""How CLI commands end on errors: one message on stderr and a stable exit code."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import typer

from clawhq.errors import ClawHQError, ConfigError
from clawhq.settings import Settings, load_settings, unknown_settings

if TYPE_CHECKING:
    from clawhq.context import AppContext
    from clawhq.controller.networks import FirewallInstaller

CONFIG_EXIT = 2
FAILURE_EXIT = 1


def settings_or_exit(*, strict_names: bool = False, **overrides: object) -> Settings:
    """The settings, or exit 2 with the message that names the bad variable.

    With ``strict_names`` (``serve``), every ``CLAWHQ_*`` variable no setting reads is named:
    a warning in development, exit 2 in production (the operator believes it does something).
    """
    try:
        settings = load_settings(**overrides)
    except ConfigError as exc:
        typer.echo(f"clawhq: {exc.message}", err=True)
        raise typer.Exit(CONFIG_EXIT) from None
    if strict_names and (unknown := unknown_settings()):
        production = settings.env == "production"
        for line in unknown:
            typer.echo(f"clawhq: {'' if production else 'warning: '}{line}", err=True)
        if production:
            typer.echo(
                "clawhq: CLAWHQ_ENV=production starts only with settings it knows: remove or "
                "correct them",
                err=True,
            )
            raise typer.Exit(CONFIG_EXIT)
    return settings


def fail(exc: ClawHQError) -> typer.Exit:
    """Print the error; the caller raises what this returns (exit 1)."""
    typer.echo(f"clawhq: {exc.message}", err=True)
    return typer.Exit(FAILURE_EXIT)


def context_or_exit(
    settings: Settings,
    *,
    instance_required: bool = True,
    firewall_installer: FirewallInstaller | None = None,
    threads: bool = True,
) -> AppContext:
    """The application's context, or exit 1 with why it cannot be built (without
    ``threads``, operations run the controller on the command's own thread)."""
    from clawhq.context import build_context

    try:
        return build_context(
            settings,
            instance_required=instance_required,
            firewall_installer=firewall_installer,
            threads=threads,
        )
    except ClawHQError as exc:
        raise fail(exc) from None


@contextlib.contextmanager
def command_context(settings: Settings, *, threads: bool = True) -> Iterator[AppContext]:
    """The context for one command: closed at the end, a ClawHQ error ends it with exit 1."""
    context = context_or_exit(settings, threads=threads)
    try:
        yield context
    except ClawHQError as exc:
        raise fail(exc) from None
    finally:
        context.close()
