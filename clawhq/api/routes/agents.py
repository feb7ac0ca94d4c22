"""``/api/agents``: the caller's agents and their lifecycle."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response, status

from clawhq.api.audit import Audit
from clawhq.api.deps import Context, CurrentUser, DbSession, Ops, Reads
from clawhq.api.problems import problem_responses
from clawhq.api.schemas import AgentCreate, AgentList, AgentPublic
from clawhq.controller.views import AgentViews
from clawhq.db.models import Agent, Plan
from clawhq.errors import ClawHQError
from clawhq.services import agents
from clawhq.services.agents import NewAgent

router = APIRouter(
    prefix="/api/agents", tags=["agents"], responses=problem_responses(400, 401, 422, 503)
)
# What starting a container can answer besides: no such agent, wrong state, plan or bundled key,
# too many deploys at once, the engine refusing.
LIFECYCLE_ERRORS = problem_responses(403, 404, 409, 429, 502)

AgentId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
#: The largest id an event table's INTEGER key holds (32 bits on PostgreSQL).
MAX_EVENT_ID = 2**31 - 1
#: A page cursor over events: those with a smaller id (a ``nextBefore`` from the last page).
Before = Annotated[int | None, Query(ge=1, le=MAX_EVENT_ID)]


def present(row: Mapping[str, Any], views: AgentViews) -> AgentPublic:
    """An agent row as its owner sees it, with what the controller observed of it."""
    up_to_date, drift = views.drift(row)
    state = views.container_state(row["id"], row.get("container_id"))
    shown = {k: v for k, v in row.items() if k in _PUBLIC_FIELDS}
    llm = views.llm_access(row)
    return AgentPublic.model_validate(
        {
            **shown,
            "container_status": state,
            "up_to_date": up_to_date,
            "drift": drift,
            "llm_access": llm,
        }
    )


_PUBLIC_FIELDS = frozenset(AgentPublic.model_fields)


def public(agent: Agent, views: AgentViews, plan: Plan | None = None) -> AgentPublic:
    return present(agents.row_of(agent, plan), views)


def new_agent(body: AgentCreate) -> NewAgent:
    """What a create request asks for."""
    return NewAgent(
        name=body.name,
        model_provider=body.model_provider,
        model=body.model,
        api_key=body.api_key,
        uses_bundled_api=body.uses_bundled_api,
        channels=tuple(body.channels),
        channel_env=body.channel_credentials.as_env(),
    )


@router.get("", response_model=AgentList, response_model_by_alias=True)
def list_agents(user: CurrentUser, reads: Reads, context: Context) -> AgentList:
    """The caller's agents, each with what the engine last reported of its container."""
    with reads() as session:
        owned = agents.list_agents(session, user)
    return AgentList(agents=[public(a, context.views, user.plan) for a in owned])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=AgentPublic,
    responses=problem_responses(403, 409),
)
def create_agent(
    body: AgentCreate, user: CurrentUser, session: DbSession, context: Context, audit: Audit
) -> AgentPublic:
    """Create an agent (STOPPED). Over the plan's limit: 403 ``agent_limit_reached``."""
    try:
        agent = agents.create_agent(session, context.keyring, user, new_agent(body))
    except ClawHQError as exc:
        audit.record("agent.create", f"error:{exc.code}", detail=exc.message)
        raise
    audit.record("agent.create", agent_id=agent.id)
    return public(agent, context.views, user.plan)


@router.get("/{agent_id}", response_model=AgentPublic, responses=problem_responses(404))
async def get_agent(agent_id: AgentId, user: CurrentUser, context: Context) -> AgentPublic:
    # The most frequent call (clients poll it while deploying): one row read on the event loop;
    # the container's state comes from the controller's cache, never from the engine.
    row = await context.loop_reads.first(agents.OWNER_VIEW, agent_id=agent_id)
    return present(agents.owned_view(row, user, agent_id), context.views)


@router.post(
    "/{agent_id}/deploy",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=AgentPublic,
    responses=LIFECYCLE_ERRORS,
)
def deploy_agent(
    agent_id: AgentId, user: CurrentUser, ops: Ops, context: Context, audit: Audit
) -> AgentPublic:
    """(Re)create the container and start it; ``RUNNING`` follows once it answers healthy."""
    with audit.action("agent.deploy", agent_id=agent_id):
        return public(ops.deploy(agent_id, user.id), context.views, user.plan)


@router.post(
    "/{agent_id}/start",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=AgentPublic,
    responses=LIFECYCLE_ERRORS,
)
def start_agent(
    agent_id: AgentId, user: CurrentUser, ops: Ops, context: Context, audit: Audit
) -> AgentPublic:
    with audit.action("agent.start", agent_id=agent_id):
        return public(ops.start(agent_id, user.id), context.views, user.plan)


@router.post(
    "/{agent_id}/stop", response_model=AgentPublic, responses=problem_responses(404, 409, 502)
)
def stop_agent(
    agent_id: AgentId, user: CurrentUser, ops: Ops, context: Context, audit: Audit
) -> AgentPublic:
    with audit.action("agent.stop", agent_id=agent_id):
        return public(ops.stop(agent_id, user.id), context.views, user.plan)


@router.delete(
    "/{agent_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(404, 409, 502),
)
def delete_agent(
    agent_id: AgentId,
    user: CurrentUser,
    ops: Ops,
    audit: Audit,
    keep_workspace: Annotated[
        bool,
        Query(
            alias="keepWorkspace",
            description="Keep the agent's workspace volume (the default); false deletes it too.",
        ),
    ] = True,
) -> Response:
    with audit.action("agent.delete", agent_id=agent_id):
        ops.destroy(agent_id, user.id, keep_workspace=keep_workspace)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
