"""What an operator reads of rollouts: one summary per rollout, with its members."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from clawhq.controller.rollout_transitions import FINISHED_MEMBER, MemberState
from clawhq.controller.rollouts import members_of
from clawhq.db.models import Rollout


@dataclass(frozen=True)
class MemberView:
    agent_id: str
    state: str
    previous_image: str | None
    reason: str | None
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class RolloutView:
    id: str
    state: str
    image: str | None
    selector: dict[str, Any]
    max_unavailable: int
    max_failures: int
    failures: int
    message: str
    #: Members per state, every state present.
    counts: dict[str, int]
    total: int
    #: Finished members (done, rolled back, skipped) in percent of all of them.
    progress: int
    created_by: str | None
    created_at: datetime
    finished_at: datetime | None
    members: list[MemberView]

    @property
    def finished(self) -> bool:
        return self.finished_at is not None


def summarize(session: Session, rollout: Rollout) -> RolloutView:
    members = members_of(session, rollout.id)
    counts = {state.value: 0 for state in MemberState}
    for member in members:
        counts[member.state] = counts.get(member.state, 0) + 1
    total = len(members)
    finished = sum(counts[state] for state in FINISHED_MEMBER)
    return RolloutView(
        id=rollout.id,
        state=rollout.state,
        image=rollout.image,
        selector=dict(rollout.selector),
        max_unavailable=rollout.max_unavailable,
        max_failures=rollout.max_failures,
        failures=rollout.failures,
        message=rollout.message,
        counts=counts,
        total=total,
        progress=finished * 100 // total if total else 100,
        created_by=rollout.created_by,
        created_at=rollout.created_at,
        finished_at=rollout.finished_at,
        members=[
            MemberView(
                agent_id=m.agent_id,
                state=m.state,
                previous_image=m.previous_image,
                reason=m.reason,
                started_at=m.started_at,
                finished_at=m.finished_at,
            )
            for m in members
        ],
    )


def newest(session: Session, limit: int = 50) -> list[Rollout]:
    """Rollouts, newest first."""
    query = select(Rollout).order_by(Rollout.created_at.desc(), Rollout.id.desc())
    return list(session.scalars(query.limit(limit)))
