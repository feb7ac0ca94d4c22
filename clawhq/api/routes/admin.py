"""``/api/admin``: operations reserved to admins."""

from __future__ import annotations

from fastapi import APIRouter

from clawhq.api.deps import Admin, DbSession
from clawhq.api.schemas import PlanChange, UserPublic
from clawhq.services import users

router = APIRouter(prefix="/api/admin", tags=["admin"])


@router.patch("/users/{user_id}", response_model=UserPublic)
def change_plan(user_id: str, body: PlanChange, admin: Admin, session: DbSession) -> UserPublic:
    """Move a user to another plan (``free``, ``pro``, ``team``)."""
    return UserPublic.model_validate(users.set_plan(session, user_id, body.plan))
