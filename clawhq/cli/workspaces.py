"""``clawhq workspaces``: workspace volumes kept after their agent was deleted."""

from __future__ import annotations

from typing import Annotated

import typer

from clawhq.cli.exits import command_context, settings_or_exit
from clawhq.runtime import Volume
from clawhq.services.workspaces import kept_workspaces, remove_workspaces

app = typer.Typer(
    help="Workspace volumes kept after their agent was deleted (keepWorkspace, the default).",
    no_args_is_help=True,
)


@app.command("list")
def list_kept() -> None:
    """Kept workspaces, oldest first: volume, deleted agent, its user, when it was made."""
    with command_context(settings_or_exit()) as context:
        kept = kept_workspaces(context.runtime, context.sessions)
    for volume in kept:
        typer.echo(_line(volume))
    if not kept:
        typer.echo("no kept workspaces")


@app.command()
def prune(
    yes: Annotated[bool, typer.Option("--yes", help="Remove them; without it, only list")] = False,
) -> None:
    """Remove every kept workspace (the deleted agents' files go with them)."""
    with command_context(settings_or_exit()) as context:
        kept = kept_workspaces(context.runtime, context.sessions)
        for volume in kept:
            typer.echo(("removing " if yes else "would remove ") + _line(volume))
        if yes:
            remove_workspaces(context.runtime, kept)
    if kept and not yes:
        typer.echo(f"{len(kept)} kept workspace(s); run again with --yes to remove them")


def _line(volume: Volume) -> str:
    return f"{volume.name}  agent {volume.agent_id}  user {volume.user_id}  {volume.created_at}"
