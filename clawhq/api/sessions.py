"""Who is calling: a bearer token, or a browser session cookie (with CSRF and Origin checks).

A browser session is an API token like any other (a row in ``api_tokens``, named
:data:`SESSION_TOKEN_NAME`, lasting ``CLAWHQ_SESSION_TTL_HOURS``), carried in the HttpOnly cookie
:data:`SESSION_COOKIE` instead of an ``Authorization`` header. Because a browser attaches that
cookie by itself, a request it authenticates is only trusted to change something when it also
proves it comes from ClawHQ's own pages:

* the ``X-CSRF-Token`` header equals :func:`csrf_token` of the session token (the page reads it
  from the :data:`CSRF_COOKIE` cookie or from the login answer). It is an HMAC keyed by the
  session token: nobody without the token can compute it, and nothing needs to be stored;
* or, where the caller opts in (``csrf="origin"``, for pages that cannot add the header), the
  request's ``Origin`` (else its ``Referer``'s) is ``settings.public_origin``;
* WebSocket upgrades always need that ``Origin``, unless a bearer token is sent without one
  (a client that is not a browser).

A bearer token wins over the cookie when both are sent, and never needs either proof.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Literal
from urllib.parse import urlsplit

from fastapi.concurrency import run_in_threadpool
from fastapi.security.utils import get_authorization_scheme_param
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from clawhq.api.services import services_of
from clawhq.api.tokencache import TokenCache
from clawhq.context import AppContext
from clawhq.credentials import hash_token
from clawhq.db.models import User
from clawhq.errors import Forbidden, Unauthorized
from clawhq.observability import logs
from clawhq.services import users
from clawhq.settings import Settings

#: The session token (HttpOnly).
SESSION_COOKIE = "clawhq_session"
#: The CSRF value, readable by the page's scripts so they can echo it in :data:`CSRF_HEADER`.
CSRF_COOKIE = "clawhq_csrf"
CSRF_HEADER = "X-CSRF-Token"
#: The ``name`` of a browser session's token row, as ``GET /api/auth/tokens`` shows it.
SESSION_TOKEN_NAME = "browser session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_CSRF_LABEL = b"clawhq csrf v1"
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

Via = Literal["bearer", "cookie"]


def csrf_token(session_token: str) -> str:
    """The CSRF value of a session: HMAC-SHA256 keyed by the session token, url-safe base64."""
    mac = hmac.new(session_token.encode(), _CSRF_LABEL, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def _secure(settings: Settings) -> bool:
    # A development server over plain http could not keep a Secure cookie; an https public URL
    # can, whatever the environment says.
    return settings.env != "development" or settings.public_origin.startswith("https://")


def set_session_cookies(response: Response, session_token: str, settings: Settings) -> str:
    """Put a new browser session on ``response``; returns its CSRF value.

    Both cookies: ``SameSite=Lax``, ``Path=/``, ``Max-Age`` the session TTL, ``Secure`` outside
    development (or under an https public URL); the session cookie is HttpOnly as well.
    """
    csrf = csrf_token(session_token)
    max_age = max(1, int(settings.session_ttl_hours * 3600))
    secure = _secure(settings)
    for name, value, httponly in (
        (SESSION_COOKIE, session_token, True),
        (CSRF_COOKIE, csrf, False),
    ):
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path="/",
            secure=secure,
            httponly=httponly,
            samesite="lax",
        )
    return csrf


def clear_session_cookies(response: Response, settings: Settings) -> None:
    """Make the browser forget both session cookies (``Max-Age=0``, the same flags)."""
    secure = _secure(settings)
    for name, httponly in ((SESSION_COOKIE, True), (CSRF_COOKIE, False)):
        response.delete_cookie(name, path="/", secure=secure, httponly=httponly, samesite="lax")


def _bearer(conn: HTTPConnection) -> str | None:
    # As FastAPI's HTTPBearer reads it: another scheme (Basic, say) is no bearer token.
    scheme, param = get_authorization_scheme_param(conn.headers.get("authorization"))
    return param if scheme.lower() == "bearer" and param else None


def _credentials(conn: HTTPConnection, bearer: str | None) -> tuple[str, Via] | None:
    if bearer:
        return bearer, "bearer"
    cookie = conn.cookies.get(SESSION_COOKIE)
    if cookie:
        return cookie, "cookie"
    return None


def _normalize_origin(value: str | None) -> str | None:
    """``scheme://host[:port]`` lowercased, without a default port; None if not an origin."""
    if not value or value == "null":
        return None
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        host = f"{host}:{port}"
    return f"{scheme}://{host}"


def _public_origin(conn: HTTPConnection) -> str | None:
    return _normalize_origin(_context(conn).settings.public_origin)


def _request_origin(conn: HTTPConnection) -> str | None:
    """The request's ``Origin``, or the origin of its ``Referer`` when it has no Origin."""
    origin = conn.headers.get("origin")
    if origin is not None:
        return _normalize_origin(origin)
    return _normalize_origin(conn.headers.get("referer"))


def _context(conn: HTTPConnection) -> AppContext:
    return services_of(conn).context


async def _user_for_token(conn: HTTPConnection, token: str) -> tuple[User, str]:
    cache = services_of(conn).tokens
    digest = hash_token(token)
    user = cache.get(digest)
    if user is None:  # only a token not seen for a few seconds costs a database read
        user = await run_in_threadpool(_lookup, _context(conn), cache, digest, token)
    return user, digest


def _lookup(context: AppContext, cache: TokenCache, digest: str, token: str) -> User:
    # A read session: under SQLite's WAL it holds no lock that the controller's own
    # write sessions would wait for.
    with context.read_sessions() as session:
        row = users.authenticate(session, token)
        cache.put(digest, row.user, row.expires_at)
        return row.user


def _check_csrf(conn: HTTPConnection, token: str, csrf: Literal["header", "origin"]) -> None:
    given = conn.headers.get(CSRF_HEADER)
    if given is not None and hmac.compare_digest(
        given.encode("latin-1"), csrf_token(token).encode()
    ):
        return
    if csrf == "origin":
        origin = _request_origin(conn)
        if origin is not None and origin == _public_origin(conn):
            return
        raise Forbidden(
            "a request signed in by the session cookie must come from ClawHQ's own pages "
            f"(Origin {_context(conn).settings.public_origin}) or carry the {CSRF_HEADER} "
            f"header from the {CSRF_COOKIE} cookie",
            code="csrf_failed",
        )
    raise Forbidden(
        f"a request signed in by the session cookie that changes something needs the "
        f"{CSRF_HEADER} header: the value of the {CSRF_COOKIE} cookie (or of csrfToken from "
        "the login)",
        code="csrf_failed",
    )


def _bind(conn: HTTPConnection, user: User, digest: str, via: Via) -> None:
    """Charge the user's request budget and record who is calling, for logs and audit."""
    services_of(conn).limits.user.check(user.id, "requests")
    # Bound here, in the request's own context, the ids reach every log line of the endpoint
    # (a sync dependency would run in a copy of that context).
    logs.user_id.set(user.id)
    agent_id = conn.path_params.get("agent_id")
    if agent_id:
        logs.agent_id.set(agent_id)
    conn.state.user_id = user.id
    conn.state.is_admin = user.is_admin
    conn.state.token_digest = digest
    conn.state.auth_via = via


async def authenticate(
    request: Request, bearer: str | None, csrf: Literal["header", "origin"]
) -> User:
    """:func:`user_from_request` given the bearer token already read (``CurrentUser``)."""
    credentials = _credentials(request, bearer)
    if credentials is None:
        raise Unauthorized(
            "send an API token as 'Authorization: Bearer <token>', or log in for a session cookie"
        )
    token, via = credentials
    user, digest = await _user_for_token(request, token)
    if via == "cookie" and request.method not in SAFE_METHODS:
        _check_csrf(request, token, csrf)
    _bind(request, user, digest, via)
    return user


async def user_from_request(
    request: Request, *, csrf: Literal["header", "origin"] = "header"
) -> User:
    """The caller of an HTTP request, as ``CurrentUser`` finds it, for endpoints outside DI.

    A bearer token (``Authorization: Bearer``) is used when sent, else the session cookie.
    A cookie-authenticated request whose method is not GET, HEAD or OPTIONS must prove it comes
    from ClawHQ's pages: by the ``X-CSRF-Token`` header (always accepted), or, with
    ``csrf="origin"``, by an ``Origin`` (absent that, a ``Referer``) equal to
    ``settings.public_origin``. Bearer requests need neither.

    On success the user's request budget is charged (429 ``rate_limited``) and the request is
    bound to the user: ``request.state.user_id``, ``.is_admin``, ``.token_digest`` (the digest
    of the token used), ``.auth_via`` (``"bearer"`` or ``"cookie"``), and ``logs.user_id``
    (``logs.agent_id`` too when the path has an ``agent_id``).

    Raises ``Unauthorized`` (401: ``unauthorized`` without credentials, ``invalid_token``,
    ``token_expired``) or ``Forbidden`` (403 ``csrf_failed``).
    """
    return await authenticate(request, _bearer(request), csrf)


async def user_from_bearer(conn: HTTPConnection) -> User:
    """The caller by their bearer token alone (an agent's own origin: ClawHQ's session cookie
    is never sent there). Binds the user and charges their budget as the others do."""
    token = _bearer(conn)
    if token is None:
        raise Unauthorized("send an API token as 'Authorization: Bearer <token>'")
    user, digest = await _user_for_token(conn, token)
    _bind(conn, user, digest, "bearer")
    return user


async def user_from_websocket(websocket: WebSocket) -> User:
    """The caller of a WebSocket upgrade: a bearer token, else the session cookie.

    Checked before the socket is accepted: the ``Origin`` header must equal
    ``settings.public_origin`` when the session cookie authenticates, and whenever an Origin is
    sent at all; only a bearer token without any Origin (a client that is not a browser) goes
    without. Binds the user as :func:`user_from_request` does and charges the same budget.

    Raises ``Unauthorized`` (401, as :func:`user_from_request`) or ``Forbidden``
    (403 ``origin_not_allowed``).
    """
    credentials = _credentials(websocket, _bearer(websocket))
    if credentials is None:
        raise Unauthorized(
            "send an API token as 'Authorization: Bearer <token>', or log in for a session cookie"
        )
    token, via = credentials
    user, digest = await _user_for_token(websocket, token)
    sent = websocket.headers.get("origin")
    needed = via == "cookie" or sent is not None
    origin = _normalize_origin(sent)
    if needed and (origin is None or origin != _public_origin(websocket)):
        raise Forbidden(
            "WebSocket connections are accepted from "
            f"{_context(websocket).settings.public_origin} only (this one came from "
            f"{sent or 'no origin'})",
            code="origin_not_allowed",
        )
    _bind(websocket, user, digest, via)
    return user
