"""``/api/auth``: register, log in, and who am I."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, status

from clawhq.api.audit import Audit
from clawhq.api.deps import AuthAttempt, Context, CurrentUser, DbSession
from clawhq.api.problems import problem_responses
from clawhq.api.schemas import Credentials, Session, UserPublic
from clawhq.errors import ClawHQError
from clawhq.services import users

router = APIRouter(prefix="/api/auth", tags=["auth"], responses=problem_responses(400, 422, 503))


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=Session,
    responses=problem_responses(409, 429),
    dependencies=[AuthAttempt],
)
def register(body: Credentials, session: DbSession, context: Context, audit: Audit) -> Session:
    """Create an account on the free plan and get a token for it."""
    ttl = timedelta(days=context.settings.token_ttl_days)
    with audit.action("auth.register"):
        user, token = users.register(session, body.email, body.password, ttl)
    audit.record("auth.token_issued", user_id=user.id)
    return Session(user=UserPublic.model_validate(user), token=token)


@router.post(
    "/login",
    response_model=Session,
    responses=problem_responses(401, 429),
    dependencies=[AuthAttempt],
)
def login(body: Credentials, session: DbSession, context: Context, audit: Audit) -> Session:
    ttl = timedelta(days=context.settings.token_ttl_days)
    try:
        user, token = users.login(session, body.email, body.password, ttl)
    except ClawHQError as exc:
        # The address tried is kept (not the password): it is what an admin needs to see.
        audit.record("auth.login", f"error:{exc.code}", detail=f"email {body.email}")
        raise
    audit.record("auth.login", user_id=user.id)
    return Session(user=UserPublic.model_validate(user), token=token)


@router.get("/me", response_model=UserPublic, responses=problem_responses(401))
def me(user: CurrentUser) -> UserPublic:
    return UserPublic.model_validate(user)
