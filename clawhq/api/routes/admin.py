"""``/api/admin``: operations reserved to admins."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from clawhq.api.deps import Admin, DbSession
from clawhq.api.problems import problem_responses
from clawhq.api.schemas import PlanChange, UserPublic
from clawhq.services import users

UserId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]

router = APIRouter(
    prefix="/api/admin", tags=["admin"], responses=problem_responses(400, 401, 403, 422, 503)
)


@router.patch("/users/{user_id}", response_model=UserPublic, responses=problem_responses(404))
def change_plan(user_id: UserId, body: PlanChange, admin: Admin, session: DbSession) -> UserPublic:
    """Move a user to another plan (``free``, ``pro``, ``team``)."""
    return UserPublic.model_validate(users.set_plan(session, user_id, body.plan))
