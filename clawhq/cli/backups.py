"""``clawhq backups``: operators' backups of agents' workspaces (docs/backups.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from clawhq.cli.exits import command_context, settings_or_exit
from clawhq.controller.backups import prunable
from clawhq.db.backups import AgentBackup

app = typer.Typer(help="Backups of agents' workspaces: take, list, prune.", no_args_is_help=True)


@app.command()
def create(agent_id: Annotated[str, typer.Argument(help="The agent to back up")]) -> None:
    """Take a backup now (the agent stops briefly if it runs) and wait for it."""
    # The job runs here, the controller's steps on this thread (a server sharing the database
    # sees the agent's row change as for any other process's operation).
    with command_context(settings_or_exit(), threads=False) as context:
        row = context.backups.create(agent_id, None)
        done = context.backups.get(agent_id, row.id, None)
    typer.echo(_line(done))
    if done.error:
        typer.echo(f"error: {done.error}", err=True)
        raise typer.Exit(1)


@app.command("list")
def list_backups(
    agent: Annotated[str | None, typer.Option("--agent", help="One agent's only")] = None,
) -> None:
    """Every backup, by agent, newest first (also those of deleted agents)."""
    with command_context(settings_or_exit()) as context:
        found = context.backups.all(agent)
    for row in found:
        typer.echo(_line(row))
    if not found:
        typer.echo("no backups")


@app.command()
def prune(
    keep: Annotated[int, typer.Option("--keep", min=0, help="READY backups kept per agent")],
    agent: Annotated[str | None, typer.Option("--agent", help="One agent's only")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Delete them; without it, only list")] = False,
) -> None:
    """Delete all but the newest ``--keep`` READY backups of each agent, and FAILED ones."""
    with command_context(settings_or_exit()) as context:
        if not yes:
            doomed = prunable(context.backups.all(agent), keep)
        else:
            doomed = context.backups.prune(keep, agent)
    for row in doomed:
        typer.echo(("deleted " if yes else "would delete ") + _line(row))
    if doomed and not yes:
        typer.echo(f"{len(doomed)} backup(s); run again with --yes to delete them")


def _line(row: AgentBackup) -> str:
    size = f"{row.size} bytes" if row.size is not None else "-"
    return f"{row.id}  agent {row.agent_id}  {row.kind}  {row.status}  {size}  {row.created_at}"
