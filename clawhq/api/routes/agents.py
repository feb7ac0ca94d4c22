"""``/api/agents``: the caller's agents and their lifecycle."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status
from fastapi.concurrency import run_in_threadpool

from clawhq.api.audit import Audit
from clawhq.api.deps import Context, CurrentUser, DbSession, Orchestrator, Reads
from clawhq.api.problems import problem_responses
from clawhq.api.schemas import AgentCreate, AgentList, AgentPublic
from clawhq.db.models import Agent
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
UNKNOWN = "unknown"


def public(agent: Agent, container_status: str | None = None) -> AgentPublic:
    view = AgentPublic.model_validate(agent)
    return view.model_copy(update={"container_status": container_status})


@router.get("", response_model=AgentList, response_model_by_alias=True)
def list_agents(user: CurrentUser, reads: Reads, orchestrator: Orchestrator) -> AgentList:
    """The caller's agents, each with what the engine reports of its container right now."""
    with reads() as session:
        owned = agents.list_agents(session, user)
    try:
        live = orchestrator.container_states(user.id)
    except ClawHQError:
        return AgentList(agents=[public(a, UNKNOWN) for a in owned])
    return AgentList(agents=[public(a, live.get(a.id, "missing")) for a in owned])


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
    new = NewAgent(
        name=body.name,
        model_provider=body.model_provider,
        model=body.model,
        api_key=body.api_key,
        uses_bundled_api=body.uses_bundled_api,
        channels=tuple(body.channels),
        channel_env=body.channel_credentials.as_env(),
    )
    try:
        agent = agents.create_agent(session, context.keyring, user, new)
    except ClawHQError as exc:
        audit.record("agent.create", f"error:{exc.code}", detail=exc.message)
        raise
    audit.record("agent.create", agent_id=agent.id)
    return public(agent, "missing")


@router.get("/{agent_id}", response_model=AgentPublic, responses=problem_responses(404))
async def get_agent(agent_id: AgentId, user: CurrentUser, context: Context) -> AgentPublic:
    # The most frequent call (clients poll it while deploying): one row read on the event loop,
    # and the thread pool only for the engine, when there is a container to ask about.
    row = await context.loop_reads.first(agents.OWNER_VIEW, agent_id=agent_id)
    view = agents.owned_view(row, user, agent_id)
    state = "missing"
    if view["container_id"] is not None:
        try:
            state = await run_in_threadpool(
                context.orchestrator.container_state, view["container_id"]
            )
        except ClawHQError:
            state = UNKNOWN
    return AgentPublic.model_validate({**view, "container_status": state})


@router.post(
    "/{agent_id}/deploy",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=AgentPublic,
    responses=LIFECYCLE_ERRORS,
)
def deploy_agent(
    agent_id: AgentId, user: CurrentUser, orchestrator: Orchestrator, audit: Audit
) -> AgentPublic:
    """(Re)create the container and start it; ``RUNNING`` follows once it answers healthy."""
    with audit.action("agent.deploy", agent_id=agent_id):
        return public(orchestrator.deploy(agent_id, user.id))


@router.post(
    "/{agent_id}/start",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=AgentPublic,
    responses=LIFECYCLE_ERRORS,
)
def start_agent(
    agent_id: AgentId, user: CurrentUser, orchestrator: Orchestrator, audit: Audit
) -> AgentPublic:
    with audit.action("agent.start", agent_id=agent_id):
        return public(orchestrator.start(agent_id, user.id))


@router.post(
    "/{agent_id}/stop", response_model=AgentPublic, responses=problem_responses(404, 409, 502)
)
def stop_agent(
    agent_id: AgentId, user: CurrentUser, orchestrator: Orchestrator, audit: Audit
) -> AgentPublic:
    with audit.action("agent.stop", agent_id=agent_id):
        return public(orchestrator.stop(agent_id, user.id))


@router.delete(
    "/{agent_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(404, 409, 502),
)
def delete_agent(
    agent_id: AgentId,
    user: CurrentUser,
    orchestrator: Orchestrator,
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
        orchestrator.destroy(agent_id, user.id, keep_workspace=keep_workspace)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
