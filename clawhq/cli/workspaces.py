"""``clawhq workspaces``: workspace volumes kept after their agent was deleted."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated

import typer

from clawhq.cli.exits import fail, settings_or_exit
from clawhq.errors import ClawHQError
from clawhq.orchestrator.lifecycle import AgentOrchestrator
from clawhq.orchestrator.workspaces import kept_workspaces, remove_workspaces
from clawhq.runtime import Volume

app = typer.Typer(
    help="Workspace volumes kept after their agent was deleted (keepWorkspace, the default).",
    no_args_is_help=True,
)


@app.command("list")
def list_kept() -> None:
    """Kept workspaces, oldest first: volume, deleted agent, its user, when it was made."""
    with _orchestrator() as orchestrator:
        kept = kept_workspaces(orchestrator)
    for volume in kept:
        typer.echo(_line(volume))
    if not kept:
        typer.echo("no kept workspaces")


@app.command()
def prune(
    yes: Annotated[bool, typer.Option("--yes", help="Remove them; without it, only list")] = False,
) -> None:
    """Remove every kept workspace (the deleted agents' files go with them)."""
    with _orchestrator() as orchestrator:
        kept = kept_workspaces(orchestrator)
        for volume in kept:
            typer.echo(("removing " if yes else "would remove ") + _line(volume))
        if yes:
            remove_workspaces(orchestrator, kept)
    if kept and not yes:
        typer.echo(f"{len(kept)} kept workspace(s); run again with --yes to remove them")


@contextlib.contextmanager
def _orchestrator() -> Iterator[AgentOrchestrator]:
    from clawhq.context import build_context

    settings = settings_or_exit()
    try:
        context = build_context(settings)
    except ClawHQError as exc:
        raise fail(exc) from None
    try:
        yield context.orchestrator
    except ClawHQError as exc:
        raise fail(exc) from None
    finally:
        context.close()


def _line(volume: Volume) -> str:
    return f"{volume.name}  agent {volume.agent_id}  user {volume.user_id}  {volume.created_at}"
