"""Users, their plans and their API tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from clawhq.credentials import (
    API_TOKEN_PREFIX,
    hash_password,
    hash_token,
    new_token,
    verify_password,
)
from clawhq.db import history
from clawhq.db.models import Agent, ApiToken, Plan, User
from clawhq.errors import Conflict, Forbidden, InvalidRequest, NotFound, Unauthorized
from clawhq.status import DesiredState

# Verifying against this when the email is unknown keeps login timing the same either way.
_DUMMY_HASH = hash_password("clawhq-timing-equalizer")


def normalize_email(email: str) -> str:
    return email.strip().lower()


def get_plan(session: Session, name: str) -> Plan:
    plan = session.get(Plan, name)
    if plan is None:
        known = ", ".join(session.scalars(select(Plan.name).order_by(Plan.name)))
        raise InvalidRequest(f"unknown plan {name!r} (known: {known})", code="unknown_plan")
    return plan


def create_user(
    session: Session,
    email: str,
    password: str | None = None,
    *,
    plan: str = "free",
    is_admin: bool = False,
) -> User:
    """Add a user; a taken email is a 409 ``email_taken``."""
    get_plan(session, plan)
    user = User(
        email=normalize_email(email),
        password_hash=hash_password(password) if password else None,
        plan_name=plan,
        is_admin=is_admin,
    )
    session.add(user)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict("a user with this email already exists", code="email_taken") from None
    return user


def issue_token(session: Session, user: User, name: str, ttl: timedelta | None) -> str:
    """A new API token for ``user``; only its digest is stored. Returns the token itself."""
    token = new_token(API_TOKEN_PREFIX)
    expires = datetime.now(UTC) + ttl if ttl else None
    session.add(
        ApiToken(user_id=user.id, token_hash=hash_token(token), name=name, expires_at=expires)
    )
    session.flush()
    return token


def register(session: Session, email: str, password: str, ttl: timedelta) -> tuple[User, str]:
    user = create_user(session, email, password)
    token = issue_token(session, user, "login", ttl)
    session.commit()
    return user, token


def login(
    session: Session, email: str, password: str, ttl: timedelta, name: str = "login"
) -> tuple[User, str]:
    """Check the password and issue a token called ``name``; a wrong one is a 401."""
    user = session.scalars(select(User).where(User.email == normalize_email(email))).first()
    if user is None or user.password_hash is None:
        verify_password(_DUMMY_HASH, password)
        raise Unauthorized("wrong email or password", code="invalid_credentials")
    if not verify_password(user.password_hash, password):
        raise Unauthorized("wrong email or password", code="invalid_credentials")
    token = issue_token(session, user, name, ttl)
    session.commit()
    return user, token


def authenticate(session: Session, token: str) -> ApiToken:
    """The token's row (its ``user`` loaded with it); unknown or expired tokens are 401."""
    row = session.scalars(select(ApiToken).where(ApiToken.token_hash == hash_token(token))).first()
    if row is None:
        raise Unauthorized("invalid API token", code="invalid_token")
    if row.expires_at is not None and row.expires_at <= datetime.now(UTC):
        raise Unauthorized("this API token has expired: log in again", code="token_expired")
    return row


def tokens(session: Session, user_id: str) -> list[ApiToken]:
    """The user's API tokens, newest first (expired ones too, until they are revoked)."""
    query = select(ApiToken).where(ApiToken.user_id == user_id)
    return list(session.scalars(query.order_by(ApiToken.created_at.desc(), ApiToken.id)))


def revoke_token(session: Session, user_id: str, token_id: str) -> str:
    """Delete one of the user's tokens; returns its digest. Anyone else's is 404 as unknown."""
    row = session.get(ApiToken, token_id)
    if row is None or row.user_id != user_id:
        raise NotFound(f"token {token_id} not found", code="token_not_found")
    digest = row.token_hash
    session.delete(row)
    session.commit()
    return digest


def revoke_token_hash(session: Session, token_hash: str) -> None:
    """Delete the token with this digest (logout), if it still exists."""
    session.execute(delete(ApiToken).where(ApiToken.token_hash == token_hash))
    session.commit()


def revoke_all_tokens(session: Session, user_id: str) -> list[str]:
    """Delete every token of the user; returns their digests. An unknown user is 404."""
    if session.get(User, user_id) is None:
        raise NotFound(f"user {user_id} not found", code="user_not_found")
    digests = list(session.scalars(select(ApiToken.token_hash).where(ApiToken.user_id == user_id)))
    session.execute(delete(ApiToken).where(ApiToken.user_id == user_id))
    session.commit()
    return digests


def set_plan(session: Session, user_id: str, plan: str) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} not found", code="user_not_found")
    new = get_plan(session, plan)
    lost_bundled = user.plan.bundled_keys_allowed and not new.bundled_keys_allowed
    user.plan_name = new.name
    if lost_bundled:
        _tell_agents_without_keys(session, user_id, new.name)
    session.commit()
    return user


def _tell_agents_without_keys(session: Session, user_id: str, plan: str) -> None:
    """The user's agents that ran on bundled keys learn that their model calls now stop."""
    query = select(Agent.id).where(
        Agent.user_id == user_id,
        Agent.api_key_ciphertext.is_(None),
        Agent.desired_state != DesiredState.DELETED,
    )
    for agent_id in session.scalars(query):
        history.record(
            session,
            agent_id,
            "llm_access",
            f"the {plan} plan does not include ClawHQ's bundled keys: this agent's model calls "
            "are refused until it has an API key of its own",
        )


def page(session: Session, limit: int, offset: int) -> tuple[list[User], int]:
    query = select(User).order_by(User.created_at, User.id).limit(limit).offset(offset)
    return list(session.scalars(query)), count_users(session)


def count_users(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(User)) or 0


def require_room(session: Session, max_users: int) -> None:
    """Refuse a new account once the operator's cap (``CLAWHQ_MAX_USERS``) is reached."""
    if not max_users:
        return
    count = session.scalar(select(func.count()).select_from(User)) or 0
    if count >= max_users:
        raise Forbidden(
            "this ClawHQ takes no new accounts for now; ask its operator",
            code="registration_closed",
        )
