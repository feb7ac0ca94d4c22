"""Every write of a rollout's state, its members' and an agent's membership, as pure changes
of their rows (what :mod:`.transitions` is to an agent's status).

Nothing else sets ``Rollout.state``, ``failures``, ``message`` or ``finished_at``, a member's
``state``, ``reason``, ``generation``, ``previous_image``, ``previous_pin``, ``started_at`` or
``finished_at``, or ``Agent.rollout_id`` (tests/unit/test_column_owners.py checks it).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum

from clawhq.db.models import Agent, Rollout, RolloutAgent


class RolloutState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    ABORTED = "aborted"


class MemberState(StrEnum):
    PENDING = "pending"
    UPDATING = "updating"
    DONE = "done"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    SKIPPED = "skipped"


ACTIVE = frozenset({RolloutState.RUNNING, RolloutState.PAUSED})
IN_FLIGHT = frozenset({MemberState.UPDATING, MemberState.ROLLING_BACK})
FINISHED_MEMBER = frozenset({MemberState.DONE, MemberState.ROLLED_BACK, MemberState.SKIPPED})


def finish(member: RolloutAgent, state: MemberState, reason: str | None, now: datetime) -> None:
    member.state = state
    member.reason = reason
    member.finished_at = now


def remember_pin(member: RolloutAgent, agent: Agent) -> None:
    """The agent's own image pin before the rollout touched it."""
    member.previous_pin = agent.image


def updating(
    member: RolloutAgent, rollout: Rollout, agent: Agent, previous_image: str | None, now: datetime
) -> None:
    """The member's agent is being recreated with the rollout's spec (its ``generation``)."""
    member.previous_image = previous_image
    join(agent, rollout)
    member.generation = agent.generation
    member.state = MemberState.UPDATING
    member.started_at = now


def rolling_back(member: RolloutAgent, rollout: Rollout, agent: Agent, error: str) -> bool:
    """The member's new container failed its health gate: back to the previous image (the
    agent's ``generation`` asks for it). Counts the failure; True when the rollout stops."""
    join(agent, rollout)
    member.generation = agent.generation
    member.state = MemberState.ROLLING_BACK
    member.reason = f"rolled back: {error}"
    rollout.failures += 1
    if rollout.failures >= rollout.max_failures and rollout.state in ACTIVE:
        rollout.state = RolloutState.FAILED
        rollout.message = (
            f"stopped after {rollout.failures} failure(s) (max {rollout.max_failures}); "
            f"last: agent {agent.id}: {error}"
        )
        return True
    return False


def join(agent: Agent, rollout: Rollout) -> None:
    agent.rollout_id = rollout.id


def release(agent: Agent, rollout: Rollout) -> None:
    if agent.rollout_id == rollout.id:
        agent.rollout_id = None


def skip_pending(members: Sequence[RolloutAgent], reason: str, now: datetime) -> None:
    for member in members:
        if member.state == MemberState.PENDING:
            finish(member, MemberState.SKIPPED, reason, now)


def finish_if_idle(rollout: Rollout, members: Sequence[RolloutAgent], now: datetime) -> None:
    """Nothing in flight and nothing left to start: the rollout is over."""
    if rollout.finished_at is not None or any(m.state in IN_FLIGHT for m in members):
        return
    if rollout.state == RolloutState.RUNNING:
        if any(m.state == MemberState.PENDING for m in members):
            return
        rollout.state = RolloutState.COMPLETED
        rolled_back = sum(1 for m in members if m.state == MemberState.ROLLED_BACK)
        rollout.message = f"completed; {rolled_back} agent(s) rolled back" if rolled_back else ""
    elif rollout.state == RolloutState.PAUSED:
        return
    rollout.finished_at = now


def pause(rollout: Rollout) -> None:
    if rollout.state == RolloutState.RUNNING:
        rollout.state = RolloutState.PAUSED


def resume(rollout: Rollout) -> None:
    if rollout.state == RolloutState.PAUSED:
        rollout.state = RolloutState.RUNNING


def abort(rollout: Rollout, members: Sequence[RolloutAgent], now: datetime) -> None:
    """Pending members are skipped; members in flight finish (rollbacks included)."""
    rollout.state = RolloutState.ABORTED
    rollout.message = "aborted by an operator"
    skip_pending(members, "rollout aborted", now)
    finish_if_idle(rollout, members, now)
