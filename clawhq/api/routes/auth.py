"""``/api/auth``: register, log in, and who am I."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, status

from clawhq.api.deps import Context, CurrentUser, DbSession
from clawhq.api.problems import problem_responses
from clawhq.api.schemas import Credentials, Session, UserPublic
from clawhq.services import users

router = APIRouter(prefix="/api/auth", tags=["auth"], responses=problem_responses(400, 422, 503))


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=Session,
    responses=problem_responses(409),
)
def register(body: Credentials, session: DbSession, context: Context) -> Session:
    """Create an account on the free plan and get a token for it."""
    ttl = timedelta(days=context.settings.token_ttl_days)
    user, token = users.register(session, body.email, body.password, ttl)
    return Session(user=UserPublic.model_validate(user), token=token)


@router.post("/login", response_model=Session, responses=problem_responses(401))
def login(body: Credentials, session: DbSession, context: Context) -> Session:
    ttl = timedelta(days=context.settings.token_ttl_days)
    user, token = users.login(session, body.email, body.password, ttl)
    return Session(user=UserPublic.model_validate(user), token=token)


@router.get("/me", response_model=UserPublic, responses=problem_responses(401))
def me(user: CurrentUser) -> UserPublic:
    return UserPublic.model_validate(user)
