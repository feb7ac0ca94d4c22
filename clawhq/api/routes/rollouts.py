"""``/api/admin/rollouts``: an operator's new spec carried to many agents, health-gated.

A rollout is desired state in the database; the controller carries it out (and picks it up
again after a restart). These routes start, read, follow, pause, resume and abort it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from clawhq.api.audit import Audit, AuditTrail
from clawhq.api.deps import Admin, Context, DbSession, Reads, Streams
from clawhq.api.problems import problem_responses
from clawhq.api.schemas_rollouts import RolloutCreate, RolloutList, RolloutPublic
from clawhq.api.streams import stream_response
from clawhq.context import AppContext
from clawhq.controller import rollouts
from clawhq.controller.rollout_view import newest, summarize
from clawhq.db.models import Rollout
from clawhq.errors import ClawHQError

RolloutId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
SSE = "text/event-stream"
POLL_SECONDS = 0.5
#: A progress stream ends after this long (the client reconnects for more).
STREAM_SECONDS = 3600.0

router = APIRouter(
    prefix="/api/admin/rollouts",
    tags=["admin"],
    responses=problem_responses(400, 401, 403, 422, 503),
)


def public(session: Session, rollout: Rollout) -> RolloutPublic:
    view = summarize(session, rollout)
    return RolloutPublic.model_validate(view, from_attributes=True)


def _enqueue(context: AppContext, rollout_id: str) -> None:
    """Tell the controller (when this process runs one) to look at the rollout now."""
    controller = getattr(context, "controller", None)
    enqueue = getattr(controller, "enqueue_rollout", None)
    if callable(enqueue):
        enqueue(rollout_id)


@contextmanager
def _audited(audit: AuditTrail, action: str, detail: Callable[[], str]) -> Iterator[None]:
    """Record ``action`` with ``detail()`` once it succeeded, or its error code."""
    try:
        yield
    except ClawHQError as exc:
        audit.record(action, f"error:{exc.code}", detail=exc.message)
        raise
    audit.record(action, detail=detail())


@router.post("", status_code=201, response_model=RolloutPublic, responses=problem_responses(409))
def start_rollout(
    body: RolloutCreate, admin: Admin, session: DbSession, context: Context, audit: Audit
) -> RolloutPublic:
    """Start a rollout: ``maxUnavailable`` agents at a time are recreated with the new spec,
    each healthy within CLAWHQ_START_TIMEOUT or rolled back to its previous image; after
    ``maxFailures`` failures no new agent starts. Workspaces are never touched."""
    started: list[str] = []
    with _audited(audit, "rollout.start", lambda: f"rollout {started[0]}"):
        rollout = rollouts.start(
            session,
            selector=body.selector(),
            image=body.image,
            max_unavailable=body.max_unavailable,
            max_failures=body.max_failures,
            created_by=admin.email,
            image_exists=context.runtime.image_exists,
        )
        started.append(rollout.id)
        reply = public(session, rollout)
    _enqueue(context, rollout.id)
    return reply


@router.get("", response_model=RolloutList)
def list_rollouts(
    admin: Admin, reads: Reads, limit: Annotated[int, Query(ge=1, le=200)] = 20
) -> RolloutList:
    """Rollouts, newest first."""
    with reads() as session:
        return RolloutList(rollouts=[public(session, r) for r in newest(session, limit)])


@router.get(
    "/{rollout_id}",
    response_model=RolloutPublic,
    responses={
        200: {"content": {SSE: {}}, "description": "JSON, or SSE with follow=true"},
        **problem_responses(404, 429),
    },
)
def get_rollout(
    rollout_id: RolloutId,
    admin: Admin,
    reads: Reads,
    context: Context,
    streams: Streams,
    request: Request,
    follow: Annotated[
        bool, Query(description="Stream progress as Server-Sent Events until it finishes")
    ] = False,
) -> RolloutPublic | StreamingResponse:
    """The rollout's summary; with ``follow=true`` (or ``Accept: text/event-stream``) an
    ``event: progress`` with the summary whenever it changes, then ``event: end``."""
    with reads() as session:
        reply = public(session, rollouts.get(session, rollout_id))
    if not (follow or SSE in request.headers.get("accept", "")):
        return reply
    lifetime = context.settings.stream_max_seconds
    return stream_response(
        streams, lifetime, admin.id, lambda end: _follow(context, rollout_id, end)
    )


def _sse(data: object, event: str) -> str:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


def _read(context: AppContext, rollout_id: str) -> dict[str, Any] | None:
    with context.read_sessions() as session:
        rollout = session.get(Rollout, rollout_id)
        if rollout is None:
            return None
        return public(session, rollout).model_dump(mode="json", by_alias=True)


async def _follow(context: AppContext, rollout_id: str, lifetime: float) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(lifetime, STREAM_SECONDS)
    last: dict[str, Any] | None = None
    while True:
        try:
            summary = await run_in_threadpool(_read, context, rollout_id)
        except SQLAlchemyError:
            yield _sse({"error": "database_unavailable"}, "end")
            return
        if summary is None:
            yield _sse({"error": "rollout_not_found"}, "end")
            return
        if summary != last:
            yield _sse(summary, "progress")
            last = summary
        if summary["finished"]:
            yield _sse(summary, "end")
            return
        if loop.time() >= deadline:
            yield _sse({"state": summary["state"], "timeout": True}, "end")
            return
        await asyncio.sleep(POLL_SECONDS)


def _act(
    action: str,
    change: Callable[[Session], Rollout],
    rollout_id: str,
    session: Session,
    context: AppContext,
    audit: AuditTrail,
) -> RolloutPublic:
    with _audited(audit, action, lambda: f"rollout {rollout_id}"):
        rollout = change(session)
        reply = public(session, rollout)
    _enqueue(context, rollout_id)
    return reply


@router.post(
    "/{rollout_id}/pause", response_model=RolloutPublic, responses=problem_responses(404, 409)
)
def pause_rollout(
    rollout_id: RolloutId, admin: Admin, session: DbSession, context: Context, audit: Audit
) -> RolloutPublic:
    """No new agent starts; the ones being updated finish."""
    change = lambda s: rollouts.pause(s, rollout_id)  # noqa: E731
    return _act("rollout.pause", change, rollout_id, session, context, audit)


@router.post(
    "/{rollout_id}/resume", response_model=RolloutPublic, responses=problem_responses(404, 409)
)
def resume_rollout(
    rollout_id: RolloutId, admin: Admin, session: DbSession, context: Context, audit: Audit
) -> RolloutPublic:
    """Go on with a paused rollout."""
    change = lambda s: rollouts.resume(s, rollout_id)  # noqa: E731
    return _act("rollout.resume", change, rollout_id, session, context, audit)


@router.post(
    "/{rollout_id}/abort", response_model=RolloutPublic, responses=problem_responses(404, 409)
)
def abort_rollout(
    rollout_id: RolloutId, admin: Admin, session: DbSession, context: Context, audit: Audit
) -> RolloutPublic:
    """Agents not started yet are skipped; the ones being updated (or rolled back) finish."""
    change = lambda s: rollouts.abort(s, rollout_id, datetime.now(UTC))  # noqa: E731
    return _act("rollout.abort", change, rollout_id, session, context, audit)
