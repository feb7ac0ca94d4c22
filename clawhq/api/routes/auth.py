"""``/api/auth``: register, log in, who am I, log out, and one's own API tokens."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response, status

from clawhq.api.audit import Audit
from clawhq.api.deps import (
    AuthAttempt,
    Context,
    CurrentUser,
    DbSession,
    RateLimits,
    Reads,
    Registration,
    Tokens,
)
from clawhq.api.problems import problem_responses
from clawhq.api.schemas import (
    BrowserSession,
    Credentials,
    Login,
    Session,
    TokenList,
    TokenPublic,
    UserPublic,
)
from clawhq.api.sessions import SESSION_TOKEN_NAME, clear_session_cookies, set_session_cookies
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
    response_model=Session | BrowserSession,
    responses=problem_responses(401, 429),
    dependencies=[AuthAttempt],
)
def login(
    body: Login,
    request: Request,
    response: Response,
    session: DbSession,
    context: Context,
    audit: Audit,
    limits: RateLimits,
) -> Session | BrowserSession:
    """A new API token for the account; with ``cookie: true`` a browser session instead.

    A browser session lasts ``CLAWHQ_SESSION_TTL_HOURS`` and lives in the ``clawhq_session``
    cookie (HttpOnly, SameSite=Lax, Secure outside development); the answer holds the user and
    ``csrfToken`` (also the ``clawhq_csrf`` cookie), never the session token. Failed logins are
    limited per email as well as per address (``CLAWHQ_RATE_LIMIT_LOGIN_ACCOUNT``, 429
    ``rate_limited``), whether or not the account exists."""
    settings = context.settings
    # Spent before the password is checked (parallel guesses cannot overdraw it) and given back
    # on success: only failures count, and a success leaves others' failures standing.
    account = _account_key(body.email)
    per_account = limits.login_account
    per_account.check(account, "failed logins for this account")
    if body.cookie:
        ttl, name = timedelta(hours=settings.session_ttl_hours), SESSION_TOKEN_NAME
    else:
        ttl, name = timedelta(days=settings.token_ttl_days), "login"
    try:
        user, token = users.login(session, body.email, body.password, ttl, name)
    except ClawHQError as exc:
        # The address tried is kept (not the password): it is what an admin needs to see.
        audit.record("auth.login", f"error:{exc.code}", detail=f"email {body.email}")
        raise
    per_account.refund(account)
    public = UserPublic.model_validate(user)
    if not body.cookie:
        audit.record("auth.login", user_id=user.id)
        return Session(user=public, token=token)
    csrf = set_session_cookies(response, token, settings)
    audit.record("auth.login", user_id=user.id, detail=SESSION_TOKEN_NAME)
    return BrowserSession(user=public, csrf_token=csrf)


def _account_key(email: str) -> str:
    """The per-account budget's key: a digest of the normalised email (bounded in size, and
    no list of addresses tried kept in memory)."""
    return hashlib.blake2b(users.normalize_email(email).encode(), digest_size=16).hexdigest()


@router.get("/me", response_model=UserPublic, responses=problem_responses(401))
def me(user: CurrentUser) -> UserPublic:
    return UserPublic.model_validate(user)


def _caller_digest(request: Request) -> str:
    """The digest of the token this request is made with (CurrentUser has found it)."""
    return str(getattr(request.state, "token_digest", ""))


@router.post(
    "/logout", status_code=status.HTTP_204_NO_CONTENT, responses=problem_responses(401, 403, 429)
)
def logout(
    user: CurrentUser,
    request: Request,
    session: DbSession,
    context: Context,
    audit: Audit,
    tokens: Tokens,
) -> Response:
    """Revoke the token this request is made with (the caller's other tokens stay valid); a
    browser session's cookies are cleared too (its ``X-CSRF-Token`` is needed, 403
    ``csrf_failed`` without)."""
    digest = _caller_digest(request)
    users.revoke_token_hash(session, digest)
    tokens.evict([digest])
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    if getattr(request.state, "auth_via", None) == "cookie":
        clear_session_cookies(response, context.settings)
        audit.record("auth.logout", detail=SESSION_TOKEN_NAME)
    else:
        audit.record("auth.logout")
    return response


@router.get("/tokens", response_model=TokenList, responses=problem_responses(401, 429))
def list_tokens(user: CurrentUser, request: Request, reads: Reads) -> TokenList:
    """The caller's API tokens, newest first; ``current`` marks the one of this request (browser
    sessions are named ``browser session``)."""
    digest = _caller_digest(request)
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
    token_id: TokenId, user: CurrentUser, session: DbSession, audit: Audit, tokens: Tokens
) -> Response:
    """Revoke one of the caller's tokens (another user's is 404 ``token_not_found``)."""
    with audit.action("auth.token_revoke"):
        digest = users.revoke_token(session, user.id, token_id)
        tokens.evict([digest])
    return Response(status_code=status.HTTP_204_NO_CONTENT)
