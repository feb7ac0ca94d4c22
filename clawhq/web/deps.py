"""Who is using the dashboard: the browser session cookie (or a bearer token, for scripts).

A request that changes something must come from ClawHQ's own pages: its ``Origin`` (else its
``Referer``) is ClawHQ's public origin, or it carries ``X-CSRF-Token`` (htmx sends it, from
the page's meta tag). See :mod:`clawhq.api.sessions`.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qsl, urlsplit

from fastapi import Depends, Request

from clawhq.api import sessions
from clawhq.api.services import services_of
from clawhq.db.models import User
from clawhq.errors import Forbidden, InvalidRequest, Unauthorized


async def web_user(request: Request) -> User:
    user = await sessions.user_from_request(request, csrf="origin")
    request.state.web_user = user
    return user


WebUser = Annotated[User, Depends(web_user)]


async def web_admin(user: WebUser) -> User:
    if not user.is_admin:
        raise Forbidden("this needs an admin account", code="admin_required")
    return user


WebAdmin = Annotated[User, Depends(web_admin)]


async def optional_user(request: Request) -> User | None:
    """The signed-in user, or None (an anonymous visitor, or a session that has ended)."""
    if not (request.cookies.get(sessions.SESSION_COOKIE) or request.headers.get("authorization")):
        return None
    try:
        return await web_user(request)
    except (Forbidden, Unauthorized):
        return None


MaybeUser = Annotated[User | None, Depends(optional_user)]


def _origin(value: str) -> str:
    parts = urlsplit(value)
    return f"{parts.scheme}://{parts.netloc}".lower()


def require_own_origin(request: Request) -> None:
    """Forms that need no session (sign in, sign up) still come from ClawHQ's pages when the
    browser says where they come from: no signing someone in from another site."""
    sent = request.headers.get("origin")
    public = services_of(request).context.settings.public_origin
    if sent is not None and sent != "null" and _origin(sent) != _origin(public):
        raise Forbidden(
            f"this form is accepted from ClawHQ's own pages ({public}) only", code="csrf_failed"
        )


#: The most fields one form has (the agent form with every channel is about 15).
MAX_FIELDS = 64


async def form(request: Request) -> dict[str, list[str]]:
    """An ``application/x-www-form-urlencoded`` body, each name with its values in order."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if kind != "application/x-www-form-urlencoded":
        if not body:
            return {}
        raise InvalidRequest(
            "send the form as application/x-www-form-urlencoded", code="unsupported_form"
        )
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=MAX_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("the form could not be read", code="invalid_form") from None
    values: dict[str, list[str]] = {}
    for name, value in pairs:
        values.setdefault(name, []).append(value)
    return values


Form = Annotated[dict[str, list[str]], Depends(form)]


def one(values: dict[str, list[str]], name: str, default: str = "") -> str:
    """The first value of a form field."""
    found = values.get(name)
    return found[0] if found else default
