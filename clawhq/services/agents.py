"""Agents as their owners see them: create with plan checks, list, look up."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from clawhq.crypto import Keyring
from clawhq.db.models import Agent, AgentEvent, Plan, User, new_id
from clawhq.errors import Conflict, NotFound, PlanLimitExceeded
from clawhq.status import AgentStatus, DesiredState


@dataclass(frozen=True)
class NewAgent:
    """What a user asks for when creating an agent (already validated by the API)."""

    name: str
    model_provider: str = "claude"
    model: str = "claude-sonnet-4-20250514"
    api_key: str | None = None
    uses_bundled_api: bool = False
    channels: Sequence[str] = field(default_factory=tuple)
    channel_env: Mapping[str, str] = field(default_factory=dict)


def create_agent(session: Session, keyring: Keyring, user: User, new: NewAgent) -> Agent:
    """Store a new agent (STOPPED); its API key is sealed to this row."""
    # Lock the owner so two concurrent creates cannot both pass the plan check.
    owner = session.scalars(select(User).where(User.id == user.id).with_for_update(of=User)).one()
    count = session.scalar(
        select(func.count())
        .select_from(Agent)
        .where(Agent.user_id == owner.id, Agent.desired_state != DesiredState.DELETED)
    )
    if (count or 0) >= owner.plan.max_agents:
        raise PlanLimitExceeded(
            f"your plan {owner.plan.name!r} allows {owner.plan.max_agents} agent(s); "
            "delete one or upgrade your plan",
            code="agent_limit_reached",
        )
    if new.uses_bundled_api and not owner.plan.bundled_keys_allowed:
        raise PlanLimitExceeded(
            f"your plan {owner.plan.name!r} does not include ClawHQ's bundled API keys: "
            "give the agent your own apiKey",
            code="bundled_keys_not_allowed",
        )
    agent = Agent(
        id=new_id(),
        user_id=owner.id,
        name=new.name,
        model_provider=new.model_provider,
        model=new.model,
        uses_bundled_api=new.uses_bundled_api and new.api_key is None,
        channels=list(new.channels),
    )
    if new.api_key is not None:
        sealed = keyring.seal(new.api_key, agent.api_key_context)
        agent.api_key_ciphertext, agent.api_key_key_id = sealed.ciphertext, sealed.key_id
    if new.channel_env:
        sealed = keyring.seal(json.dumps(dict(new.channel_env)), agent.channel_secrets_context)
        agent.channel_secrets_ciphertext = sealed.ciphertext
        agent.channel_secrets_key_id = sealed.key_id
    session.add(agent)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise Conflict(
            f"you already have an agent named {new.name!r}", code="agent_name_taken"
        ) from None
    return agent


def list_agents(session: Session, user: User) -> list[Agent]:
    query = (
        select(Agent)
        .where(Agent.user_id == user.id, Agent.desired_state != DesiredState.DELETED)
        .order_by(Agent.created_at, Agent.id)
    )
    return list(session.scalars(query))


def page(session: Session, limit: int, offset: int, user_id: str | None = None) -> list[Agent]:
    """Agents of every user (or one), oldest first: the admin's view."""
    query = select(Agent).where(Agent.desired_state != DesiredState.DELETED)
    if user_id:
        query = query.where(Agent.user_id == user_id)
    return list(
        session.scalars(query.order_by(Agent.created_at, Agent.id).limit(limit).offset(offset))
    )


def count_by_status(session: Session) -> dict[str, int]:
    """How many agents are in each status (every status present, zeros included)."""
    counts = {status.value: 0 for status in AgentStatus}
    query = select(Agent.status, func.count()).group_by(Agent.status)
    for status, count in session.execute(query).all():
        counts[str(status)] = int(count)
    return counts


def history(
    session: Session, agent: Agent, limit: int, before: int | None = None
) -> list[AgentEvent]:
    """The agent's lifecycle history, newest first."""
    query = select(AgentEvent).where(AgentEvent.agent_id == agent.id)
    if before is not None:
        query = query.where(AgentEvent.id < before)
    return list(session.scalars(query.order_by(AgentEvent.id.desc()).limit(limit)))


def events_since(session: Session, agent_id: str, after: int) -> list[AgentEvent]:
    query = select(AgentEvent).where(AgentEvent.agent_id == agent_id, AgentEvent.id > after)
    return list(session.scalars(query.order_by(AgentEvent.id)))


def last_deploy_event_id(session: Session, agent_id: str) -> int:
    """The id just before the agent's latest deploy or start began (0 if it never did)."""
    latest = session.scalar(
        select(func.max(AgentEvent.id)).where(
            AgentEvent.agent_id == agent_id, AgentEvent.kind == "deploying"
        )
    )
    return int(latest) - 1 if latest else 0


def get_owned(session: Session, user: User, agent_id: str) -> Agent:
    """The caller's agent; another user's agent is indistinguishable from a missing one."""
    agent = session.get(Agent, agent_id)
    if agent is None or not _visible(agent.user_id, agent.desired_state, user):
        raise _not_found(agent_id)
    return agent


_agents = Agent.__table__.c
#: One agent as its owner sees it, by ``agent_id``, as a plain row: the API's most frequent
#: read answers from this without building an ORM object (see ``clawhq.db.loop_reads``).
OWNER_VIEW = select(
    _agents.id,
    _agents.user_id,
    _agents.name,
    _agents.model_provider,
    _agents.model,
    _agents.status,
    _agents.desired_state,
    _agents.last_error,
    _agents.last_exit_code,
    _agents.oom_killed,
    _agents.restart_count,
    _agents.next_restart_at,
    _agents.last_healthy_at,
    _agents.container_id,
    _agents.container_port,
    _agents.api_key_ciphertext.is_not(None).label("has_api_key"),
    _agents.uses_bundled_api,
    _agents.channels,
    _agents.total_messages,
    _agents.total_tokens,
    _agents.last_active_at,
    _agents.last_heartbeat,
    _agents.deployed_at,
    _agents.created_at,
    _agents.updated_at,
    _agents.image,
    _agents.applied_config,
    select(Plan.image)
    .join(User, User.plan_name == Plan.name)
    .where(User.id == _agents.user_id)
    .scalar_subquery()
    .label("plan_image"),
    select(Plan.egress_policy)
    .join(User, User.plan_name == Plan.name)
    .where(User.id == _agents.user_id)
    .scalar_subquery()
    .label("plan_egress"),
    select(Plan.bundled_keys_allowed)
    .join(User, User.plan_name == Plan.name)
    .where(User.id == _agents.user_id)
    .scalar_subquery()
    .label("plan_bundled_keys"),
).where(_agents.id == bindparam("agent_id"))


def row_of(agent: Agent, plan: Plan | None) -> dict[str, Any]:
    """An agent as the same plain row ``OWNER_VIEW`` gives (``plan``: its owner's)."""
    row = {column.key: getattr(agent, column.key) for column in Agent.__table__.columns}
    row["has_api_key"] = agent.has_api_key
    row["plan_image"] = plan.image if plan is not None else None
    row["plan_egress"] = plan.egress_policy if plan is not None else "open"
    row["plan_bundled_keys"] = plan.bundled_keys_allowed if plan is not None else False
    return row


def plans_of(session: Session, user_ids: Iterable[str]) -> dict[str, Plan]:
    """Each user's plan (its image for drift, its keys for model access), in one query."""
    query = select(User.id, Plan).join(Plan, User.plan_name == Plan.name)
    query = query.where(User.id.in_(set(user_ids)))
    return {user_id: plan for user_id, plan in session.execute(query).all()}


def owned_view(row: dict[str, Any] | None, user: User, agent_id: str) -> dict[str, Any]:
    """An ``OWNER_VIEW`` row if it is the caller's (the same rule as ``get_owned``)."""
    if row is None or not _visible(row["user_id"], row["desired_state"], user):
        raise _not_found(agent_id)
    return row


def _visible(owner_id: str, desired_state: str, user: User) -> bool:
    return owner_id == user.id and desired_state != DesiredState.DELETED


def _not_found(agent_id: str) -> NotFound:
    return NotFound(f"agent {agent_id} not found", code="agent_not_found")
