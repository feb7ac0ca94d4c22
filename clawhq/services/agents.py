"""Agents as their owners see them: create with plan checks, list, look up."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from clawhq.crypto import Keyring
from clawhq.db.models import Agent, User, new_id
from clawhq.errors import Conflict, NotFound, PlanLimitExceeded
from clawhq.status import DesiredState


@dataclass(frozen=True)
class NewAgent:
    """What a user asks for when creating an agent (already validated by the API)."""

    name: str
    model_provider: str = "claude"
    model: str = "claude-sonnet-4-20250514"
    api_key: str | None = None
    uses_bundled_api: bool = False
    channels: Sequence[str] = field(default_factory=tuple)


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


def get_owned(session: Session, user: User, agent_id: str) -> Agent:
    """The caller's agent; another user's agent is indistinguishable from a missing one."""
    agent = session.get(Agent, agent_id)
    if agent is None or agent.user_id != user.id or agent.desired_state is DesiredState.DELETED:
        raise NotFound(f"agent {agent_id} not found", code="agent_not_found")
    return agent
