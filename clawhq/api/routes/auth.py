"""``/api/auth``: register, log in, who am I, log out, and one's own API tokens."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response, status

from clawhq.api.audit import Audit
from clawhq.api.deps import (
    AuthAttempt,
    BearerToken,
    Context,
    CurrentUser,
    DbSession,
    Reads,
    Registration,
)
from clawhq.api.problems import problem_responses
from clawhq.api.schemas import Credentials, Session, TokenList, TokenPublic, UserPublic
from clawhq.api.tokencache import TokenCache
from clawhq.credentials import hash_token
from clawhq.errors import ClawHQError
from clawhq.services import users

TokenId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]

router = APIRouter(prefix="/api/auth", tags=["auth"], responses=problem_responses(400, 422, 503))


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=Session,
    responses=problem_responses(403, 409, 429),
    dependencies=[AuthAttempt, Registration],
)
def register(body: Credentials, session: DbSession, context: Context, audit: Audit) -> Session:
    """Create an account on the free plan and get a token for it (403 ``registration_closed``
    once ``CLAWHQ_MAX_USERS`` accounts exist)."""
    ttl = timedelta(days=context.settings.token_ttl_days)
    with audit.action("auth.register"):
        users.require_room(session, context.settings.max_users)
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


def _caller_digest(credentials: BearerToken) -> str:
    # CurrentUser has checked the credentials already: they are there.
    return hash_token(credentials.credentials) if credentials else ""


@router.post(
    "/logout", status_code=status.HTTP_204_NO_CONTENT, responses=problem_responses(401, 429)
)
def logout(
    user: CurrentUser,
    credentials: BearerToken,
    request: Request,
    session: DbSession,
    audit: Audit,
) -> Response:
    """Revoke the token this request is made with (the caller's other tokens stay valid)."""
    digest = _caller_digest(credentials)
    users.revoke_token_hash(session, digest)
    cache: TokenCache = request.app.state.tokens
    cache.evict([digest])
    audit.record("auth.logout")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/tokens", response_model=TokenList, responses=problem_responses(401, 429))
def list_tokens(user: CurrentUser, credentials: BearerToken, reads: Reads) -> TokenList:
    """The caller's API tokens, newest first; ``current`` marks the one of this request."""
    digest = _caller_digest(credentials)
    with reads() as session:
        rows = users.tokens(session, user.id)
        return TokenList(
            tokens=[
                TokenPublic(
                    id=row.id,
                    name=row.name,
                    created_at=row.created_at,
                    expires_at=row.expires_at,
                    current=row.token_hash == digest,
                )
                for row in rows
            ]
        )


@router.delete(
    "/tokens/{token_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(401, 404, 429),
)
def revoke_token(
    token_id: TokenId, user: CurrentUser, request: Request, session: DbSession, audit: Audit
) -> Response:
    """Revoke one of the caller's tokens (another user's is 404 ``token_not_found``)."""
    with audit.action("auth.token_revoke"):
        digest = users.revoke_token(session, user.id, token_id)
        cache: TokenCache = request.app.state.tokens
        cache.evict([digest])
    return Response(status_code=status.HTTP_204_NO_CONTENT)
