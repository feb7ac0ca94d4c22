"""Rollouts: an operator's new spec carried to many agents, a few at a time, health-gated.

A rollout is desired state in the database (``rollouts``, ``rollout_agents``): its members are
a snapshot of the agents it selected, taken at start. ``RolloutDriver.sync`` moves one rollout
forward from what the rows say (idempotent, never waits); the agent controller calls it when a
member agent settles, at start-up and every reconcile interval. An agent whose new container
fails its health gate is returned to its previous image (same port, same workspace) and stays
pinned there; after ``max_failures`` such failures no new member starts.

Member states: pending -> updating -> done | rolling_back -> rolled_back; or skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from clawhq.controller import desired
from clawhq.controller import rollout_transitions as rt
from clawhq.controller.rollout_transitions import (
    ACTIVE,
    IN_FLIGHT,
    MemberState,
    RolloutState,
)
from clawhq.db.models import Agent, Plan, Rollout, RolloutAgent, User
from clawhq.errors import Conflict, InvalidRequest, NotFound
from clawhq.status import AgentStatus, DesiredState

log = logging.getLogger(__name__)


SETTLED = frozenset({AgentStatus.RUNNING, AgentStatus.ERROR, AgentStatus.STOPPED})
#: While members are in flight, how soon ``sync`` asks to be called again should no agent
#: settle (the controller calls it on every settle; this is only a safety net).
FOLLOW_UP_SECONDS = 15.0
#: Serializes rollout starts on PostgreSQL (SQLite's write lock already does).
_START_LOCK = 0x636C6177  # "claw"

RequestRecreate = Callable[[Agent], None]
EnqueueAgent = Callable[[str], None]
IntendedConfig = Callable[[Session, Agent, str | None], dict[str, Any]]
Clock = Callable[[], datetime]


class RolloutDriver:
    """Moves rollouts forward, one ``sync`` at a time; holds no state of its own."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        request_recreate: RequestRecreate,
        enqueue_agent: EnqueueAgent,
        intended_config: IntendedConfig,
        now: Clock,
    ) -> None:
        self._sessions = sessions
        self._request_recreate = request_recreate
        self._enqueue_agent = enqueue_agent
        self._intended_config = intended_config
        self._now = now

    def sync(self, rollout_id: str) -> float | None:
        """Advance the rollout from what the rows say; seconds until a follow-up, or None."""
        touched: list[str] = []
        with self._sessions() as session:
            query = select(Rollout).where(Rollout.id == rollout_id).with_for_update()
            rollout = session.scalars(query).one_or_none()
            if rollout is None or rollout.finished_at is not None:
                return None
            members = members_of(session, rollout.id)
            for member in members:
                if member.state in IN_FLIGHT:
                    self._follow(session, rollout, member, touched)
            if rollout.state == RolloutState.RUNNING:
                self._start_more(session, rollout, members, touched)
            elif rollout.state == RolloutState.ABORTED:
                rt.skip_pending(members, "rollout aborted", self._now())
            in_flight = any(m.state in IN_FLIGHT for m in members)
            rt.finish_if_idle(rollout, members, self._now())
            session.commit()
        for agent_id in touched:
            self._enqueue_agent(agent_id)
        return FOLLOW_UP_SECONDS if in_flight else None

    # -- members in flight -----------------------------------------------------------------

    def _follow(
        self, session: Session, rollout: Rollout, member: RolloutAgent, touched: list[str]
    ) -> None:
        agent = session.get(Agent, member.agent_id, with_for_update=True)
        now = self._now()
        if agent is None or agent.desired_state is DesiredState.DELETED:
            rt.finish(member, MemberState.SKIPPED, "agent deleted during the rollout", now)
            return
        if agent.handled_generation < member.generation or agent.status not in SETTLED:
            return  # the controller has not finished the step asked for yet
        if agent.status is AgentStatus.STOPPED:
            rt.release(agent, rollout)
            rt.finish(member, MemberState.SKIPPED, "stopped by its owner during the rollout", now)
            return
        error = agent.last_error or "no reason given"
        if member.state == MemberState.UPDATING:
            if agent.status is AgentStatus.RUNNING:
                rt.release(agent, rollout)
                rt.finish(member, MemberState.DONE, None, now)
                return
            self._roll_back(rollout, member, agent, error, touched)
            return
        rt.release(agent, rollout)
        if agent.status is AgentStatus.RUNNING:
            reason = f"{member.reason}; pinned to its previous image {member.previous_image}"
        else:
            reason = f"{member.reason}; the rollback failed too: {error}"
        rt.finish(member, MemberState.ROLLED_BACK, reason, now)

    def _roll_back(
        self,
        rollout: Rollout,
        member: RolloutAgent,
        agent: Agent,
        error: str,
        touched: list[str],
    ) -> None:
        """Back to the previous image, same port and workspace; count the failure."""
        desired.pin_image(agent, member.previous_image)
        self._request_recreate(agent)
        rt.rolling_back(member, rollout, agent, error)
        touched.append(agent.id)
        log.warning("rollout %s: agent %s failed, rolling back: %s", rollout.id, agent.id, error)

    # -- starting members ------------------------------------------------------------------

    def _start_more(
        self,
        session: Session,
        rollout: Rollout,
        members: Sequence[RolloutAgent],
        touched: list[str],
    ) -> None:
        in_flight = sum(1 for m in members if m.state in IN_FLIGHT)
        for member in members:
            if in_flight >= rollout.max_unavailable or rollout.state != RolloutState.RUNNING:
                return
            if member.state == MemberState.PENDING and self._start(
                session, rollout, member, touched
            ):
                in_flight += 1

    def _start(
        self, session: Session, rollout: Rollout, member: RolloutAgent, touched: list[str]
    ) -> bool:
        """Take one pending member; True if it is now being updated."""
        agent = session.get(Agent, member.agent_id, with_for_update=True)
        now = self._now()
        if agent is None or agent.desired_state is DesiredState.DELETED:
            rt.finish(member, MemberState.SKIPPED, "agent deleted before its turn", now)
            return False
        rt.remember_pin(member, agent)
        if agent.desired_state is not DesiredState.RUNNING:
            if rollout.image:
                desired.pin_image(agent, rollout.image)
            reason = "stopped; picks the new spec up on its next start"
            rt.finish(member, MemberState.DONE, reason, now)
            return False
        if self._intended_config(session, agent, rollout.image) == agent.applied_config:
            if rollout.image:
                desired.pin_image(agent, rollout.image)
            rt.finish(member, MemberState.SKIPPED, "already up to date", now)
            return False
        applied = agent.applied_config or {}
        previous = applied.get("image") or self._current_image(session, agent)
        if rollout.image:
            desired.pin_image(agent, rollout.image)
        self._request_recreate(agent)
        rt.updating(member, rollout, agent, previous, now)
        touched.append(agent.id)
        return True

    def _current_image(self, session: Session, agent: Agent) -> str | None:
        image = self._intended_config(session, agent, None).get("image")
        return str(image) if image else None


# -- helpers shared with the operator's actions ------------------------------------------------


def members_of(session: Session, rollout_id: str) -> list[RolloutAgent]:
    """A rollout's members, in the order they are taken."""
    query = (
        select(RolloutAgent)
        .where(RolloutAgent.rollout_id == rollout_id)
        .order_by(RolloutAgent.position)
    )
    return list(session.scalars(query))


# -- the operator's actions (API and CLI) ------------------------------------------------------


def get(session: Session, rollout_id: str, *, lock: bool = False) -> Rollout:
    query = select(Rollout).where(Rollout.id == rollout_id)
    rollout = session.scalars(query.with_for_update() if lock else query).one_or_none()
    if rollout is None:
        raise NotFound(f"rollout {rollout_id} not found", code="rollout_not_found")
    return rollout


def unfinished(session: Session) -> list[str]:
    """Rollouts still to drive (running, paused, or stopping with agents in flight)."""
    query = select(Rollout.id).where(Rollout.finished_at.is_(None)).order_by(Rollout.created_at)
    return list(session.scalars(query))


def current(session: Session) -> Rollout | None:
    """The rollout not finished yet, if any (at most one)."""
    query = select(Rollout).where(Rollout.finished_at.is_(None)).order_by(Rollout.created_at)
    return session.scalars(query.limit(1)).first()


def start(
    session: Session,
    *,
    selector: dict[str, Any],
    image: str | None,
    max_unavailable: int,
    max_failures: int,
    created_by: str | None,
    image_exists: Callable[[str], bool] | None = None,
) -> Rollout:
    """A new rollout over a snapshot of the selected agents (committed).

    ``selector`` is ``{"agents": [ids]}``, ``{"plan": name}`` or ``{"all": True}``.
    """
    if max_unavailable < 1 or max_failures < 1:
        raise InvalidRequest("maxUnavailable and maxFailures must be at least 1")
    if image is not None and image_exists is not None and not image_exists(image):
        raise InvalidRequest(
            f"image {image} is not on the container engine; build it first "
            "(clawhq image build openclaw --version V)",
            code="image_not_found",
        )
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _START_LOCK})
    if (active := current(session)) is not None:
        raise Conflict(
            f"rollout {active.id} is {active.state}; wait for it, or abort it first",
            code="rollout_in_progress",
        )
    agents = _select(session, selector)
    if not agents:
        raise InvalidRequest("no agents match the selection", code="no_agents_selected")
    rollout = Rollout(
        image=image,
        selector=selector,
        max_unavailable=max_unavailable,
        max_failures=max_failures,
        state=RolloutState.RUNNING,
        failures=0,
        message="",
        created_by=created_by,
    )
    session.add(rollout)
    session.flush()
    session.add_all(
        RolloutAgent(
            rollout_id=rollout.id,
            agent_id=agent.id,
            position=position,
            state=MemberState.PENDING,
            generation=0,
        )
        for position, agent in enumerate(agents)
    )
    session.commit()
    return rollout


def _select(session: Session, selector: dict[str, Any]) -> list[Agent]:
    query = select(Agent).where(Agent.desired_state != DesiredState.DELETED)
    chosen = [key for key in ("agents", "plan", "all") if selector.get(key)]
    if len(chosen) != 1:
        raise InvalidRequest("select agents with exactly one of: agents, plan, all")
    if ids := selector.get("agents"):
        query = query.where(Agent.id.in_(list(ids)))
    elif plan := selector.get("plan"):
        if session.get(Plan, plan) is None:
            raise InvalidRequest(f"unknown plan {plan!r}", code="unknown_plan")
        query = query.join(User, User.id == Agent.user_id).where(User.plan_name == plan)
    found = list(session.scalars(query.order_by(Agent.created_at, Agent.id)))
    if ids and (missing := sorted(set(ids) - {agent.id for agent in found})):
        raise InvalidRequest(f"unknown agent(s): {', '.join(missing)}", code="agent_not_found")
    return found


def pause(session: Session, rollout_id: str) -> Rollout:
    """No new member starts; members in flight finish (committed)."""
    rollout = _active(session, rollout_id, "pause")
    rt.pause(rollout)
    session.commit()
    return rollout


def resume(session: Session, rollout_id: str) -> Rollout:
    """Go on with a paused rollout (committed)."""
    rollout = _active(session, rollout_id, "resume")
    rt.resume(rollout)
    session.commit()
    return rollout


def abort(session: Session, rollout_id: str, now: datetime) -> Rollout:
    """Pending members are skipped; members in flight finish, rollbacks included (committed)."""
    rollout = _active(session, rollout_id, "abort")
    rt.abort(rollout, members_of(session, rollout.id), now)
    session.commit()
    return rollout


def _active(session: Session, rollout_id: str, action: str) -> Rollout:
    rollout = get(session, rollout_id, lock=True)
    if rollout.state not in ACTIVE:
        raise Conflict(f"cannot {action} a rollout that is {rollout.state}", code="invalid_state")
    return rollout
