"""``clawhq rollout``: start, follow, pause, resume and abort a rollout from the shell.

These commands write the rollout to the database; a running ``clawhq serve`` carries it out
(its controller picks rollouts up on its periodic reconcile, CLAWHQ_RECONCILE_INTERVAL).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from clawhq.api.schemas_rollouts import RolloutPublic
from clawhq.cli.exits import fail, settings_or_exit
from clawhq.controller import rollouts
from clawhq.controller.rollout_transitions import IN_FLIGHT, RolloutState
from clawhq.controller.rollout_view import newest, summarize
from clawhq.db.models import Rollout
from clawhq.errors import ClawHQError, DatabaseUnavailable, NotFound
from clawhq.settings import Settings

if TYPE_CHECKING:
    from rich.console import RenderableType

CARRIED_OUT = (
    "A running `clawhq serve` carries it out: its controller looks for new rollouts "
    "every few seconds."
)
WATCH_SECONDS = 1.0
BAR_WIDTH = 40

app = typer.Typer(
    help="Roll a new image or spec out to agents, a few at a time, health-gated. " + CARRIED_OUT,
    no_args_is_help=True,
)


@contextlib.contextmanager
def _database(settings: Settings) -> Iterator[sessionmaker[Session]]:
    """Sessions on ClawHQ's database (no engine needed); errors end the command (exit 1)."""
    from clawhq.db.engine import create_db_engine, make_session_factory

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_db_engine(settings.resolved_database_url)
    try:
        yield make_session_factory(engine)
    except SQLAlchemyError as exc:
        why = f"the database is unavailable or not migrated ({type(exc).__name__})"
        problem = DatabaseUnavailable(f"{why}: check DATABASE_URL, run `clawhq db upgrade`")
        raise fail(problem) from None
    except ClawHQError as exc:
        raise fail(exc) from None
    finally:
        engine.dispose()


def _image_on_engine(settings: Settings, image: str) -> bool | None:
    """Whether the engine has ``image``; None (with a warning) when it cannot be asked."""
    from clawhq.runtime.docker_engine import DockerRuntime

    try:
        runtime = DockerRuntime(settings.docker_host)
    except ClawHQError as exc:
        typer.echo(f"clawhq: warning: cannot check the image ({exc.message})", err=True)
        return None
    try:
        return runtime.image_exists(image)
    except ClawHQError as exc:
        typer.echo(f"clawhq: warning: cannot check the image ({exc.message})", err=True)
        return None
    finally:
        runtime.close()


def _public(session: Session, rollout: Rollout) -> RolloutPublic:
    return RolloutPublic.model_validate(summarize(session, rollout), from_attributes=True)


@app.command("start")
def start(
    image: Annotated[
        str | None, typer.Option(help="Image to move to (default: the agents' current spec)")
    ] = None,
    agents: Annotated[
        list[str] | None,
        typer.Option("--agents", help="Agent ids (repeat the option, or comma-separated)"),
    ] = None,
    plan: Annotated[str | None, typer.Option(help="Every agent of this plan's users")] = None,
    all_agents: Annotated[bool, typer.Option("--all", help="Every agent")] = False,
    max_unavailable: Annotated[
        int, typer.Option(min=1, help="Agents recreated at the same time")
    ] = 1,
    max_failures: Annotated[
        int, typer.Option(min=1, help="Failed agents (each rolled back) before it stops")
    ] = 1,
) -> None:
    """Start a rollout; the last line printed is its id.

    Each agent gets a new container (same port, same workspace) and must answer healthy
    within CLAWHQ_START_TIMEOUT, or it is rolled back to its previous image."""
    ids = [part for value in agents or () for part in value.split(",") if part]
    chosen = sum([bool(ids), plan is not None, all_agents])
    if chosen != 1:
        typer.echo(
            "clawhq: choose the agents with exactly one of --agents, --plan, --all", err=True
        )
        raise typer.Exit(2)
    selector: dict[str, Any] = (
        {"agents": list(dict.fromkeys(ids))} if ids else {"plan": plan} if plan else {"all": True}
    )
    settings = settings_or_exit()
    found = _image_on_engine(settings, image) if image else None
    checker = None if found is None else lambda _: found
    with _database(settings) as sessions, sessions() as session:
        rollout = rollouts.start(
            session,
            selector=selector,
            image=image,
            max_unavailable=max_unavailable,
            max_failures=max_failures,
            created_by="cli",
            image_exists=checker,
        )
        summary = _public(session, rollout)
    target = image or "their current spec"
    typer.echo(
        f"started rollout of {summary.total} agent(s) to {target}, {max_unavailable} at a "
        f"time, stopping after {max_failures} failure(s). {CARRIED_OUT}"
    )
    typer.echo(summary.id)


@app.command("status")
def status(
    rollout_id: Annotated[str | None, typer.Argument(help="Default: the latest")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The summary as JSON")] = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="Follow until it finishes (exit 1 if it failed)")
    ] = False,
) -> None:
    """Where a rollout stands: a progress bar on a terminal, a line per agent otherwise.

    With --json, the summary (one JSON object a line while watching)."""
    settings = settings_or_exit()
    with _database(settings) as sessions:
        summary = _load(sessions, rollout_id)
        if watch and not as_json and sys.stdout.isatty():
            summary = _watch_live(sessions, summary)
        else:
            _show(summary, as_json, changed=False)
            while watch and not summary.finished:
                time.sleep(WATCH_SECONDS)
                last, summary = summary, _load(sessions, summary.id)
                if summary.model_dump() != last.model_dump():
                    _show(summary, as_json, changed=True)
    if watch and summary.state == RolloutState.FAILED:
        raise typer.Exit(1)


def _load(sessions: sessionmaker[Session], rollout_id: str | None) -> RolloutPublic:
    with sessions() as session:
        if rollout_id is not None:
            return _public(session, rollouts.get(session, rollout_id))
        found = newest(session, 1)
        if not found:
            raise NotFound("no rollout yet: clawhq rollout start …", code="rollout_not_found")
        return _public(session, found[0])


def _show(summary: RolloutPublic, as_json: bool, changed: bool) -> None:
    if as_json:
        typer.echo(json.dumps(summary.model_dump(mode="json", by_alias=True)))
    elif sys.stdout.isatty():
        from rich.console import Console

        Console().print(_render(summary))
    else:
        counts = " ".join(f"{state}={n}" for state, n in summary.counts.items() if n)
        typer.echo(f"{_head(summary)} progress={summary.progress}% {counts}")
        if summary.message:
            typer.echo(f"  {summary.message}")
        if not changed or summary.finished:
            for member in summary.members:
                typer.echo(f"  {member.agent_id} {member.state} {member.reason or ''}".rstrip())


def _head(summary: RolloutPublic) -> str:
    return (
        f"rollout {summary.id} {summary.state} image={summary.image or '(current spec)'} "
        f"failures={summary.failures}/{summary.max_failures}"
    )


def _render(summary: RolloutPublic) -> RenderableType:
    """The head line, a progress bar, the message, and the agents not simply pending or done."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    flying = sum(summary.counts.get(state, 0) for state in IN_FLIGHT)
    finished = summary.total - summary.counts.get("pending", 0) - flying
    bar = Table.grid(padding=(0, 1))
    bar.add_row(
        ProgressBar(total=max(summary.total, 1), completed=finished, width=BAR_WIDTH),
        f"{summary.progress}% ({finished}/{summary.total}, {flying} in flight)",
    )
    lines: list[RenderableType] = [Text(_head(summary)), bar]
    if summary.message:
        lines.append(Text(summary.message))
    for member in summary.members:
        if member.state not in ("pending", "done"):
            lines.append(Text(f"  {member.agent_id} {member.state} {member.reason or ''}"))
    return Group(*lines)


def _watch_live(sessions: sessionmaker[Session], summary: RolloutPublic) -> RolloutPublic:
    from rich.live import Live

    with Live(_render(summary), auto_refresh=False) as live:
        while not summary.finished:
            time.sleep(WATCH_SECONDS)
            summary = _load(sessions, summary.id)
            live.update(_render(summary), refresh=True)
    return summary


def _change(action: str, rollout_id: str | None) -> None:
    settings = settings_or_exit()
    with _database(settings) as sessions, sessions() as session:
        if rollout_id is None:
            active = rollouts.current(session)
            if active is None:
                raise NotFound("no rollout in progress", code="rollout_not_found")
            rollout_id = active.id
        if action == "pause":
            rollout = rollouts.pause(session, rollout_id)
        elif action == "resume":
            rollout = rollouts.resume(session, rollout_id)
        else:
            rollout = rollouts.abort(session, rollout_id, datetime.now(UTC))
        summary = _public(session, rollout)
    typer.echo(f"rollout {summary.id} is {summary.state}")


RolloutArg = Annotated[str | None, typer.Argument(help="Default: the one in progress")]


@app.command("pause")
def pause(rollout_id: RolloutArg = None) -> None:
    """No new agent starts; the ones being updated finish."""
    _change("pause", rollout_id)


@app.command("resume")
def resume(rollout_id: RolloutArg = None) -> None:
    """Go on with a paused rollout."""
    _change("resume", rollout_id)


@app.command("abort")
def abort(rollout_id: RolloutArg = None) -> None:
    """Skip the agents not started yet; the ones being updated (or rolled back) finish."""
    _change("abort", rollout_id)
