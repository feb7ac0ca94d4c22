"""Browser sessions: the login cookie, CSRF on cookie requests, Origin on WebSockets.

On SQLite and PostgreSQL. The cookies are sent by hand (``Cookie:``), never from the test
client's jar: it would not send a ``Secure`` cookie to ``http://testserver``, and a cookie it
kept from one request would silently authenticate the next.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import select, update
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from clawhq.api import sessions
from clawhq.credentials import hash_token
from clawhq.db.models import Agent, ApiToken, AuditEvent
from clawhq.errors import ClawHQError
from clawhq.settings import Settings
from tests.conftest import TEST_IMAGE, Api, running_app
from tests.doubles.runtime import FakeRuntime

PASSWORD = "correct horse battery"


# -- helpers -----------------------------------------------------------------------------------


class Browser:
    """One user's browser session: its cookies, sent by hand."""

    def __init__(self, api: Api, token: str, csrf: str, user_id: str) -> None:
        self.api = api
        self.token = token
        self.csrf = csrf
        self.user_id = user_id

    def headers(self, *, csrf: str | None = None, **extra: str) -> dict[str, str]:
        cookie = f"{sessions.SESSION_COOKIE}={self.token}; {sessions.CSRF_COOKIE}={self.csrf}"
        headers = {"Cookie": cookie, **extra}
        if csrf is not None:
            headers[sessions.CSRF_HEADER] = csrf
        return headers

    def signed(self, **extra: str) -> dict[str, str]:
        """Headers of a request from ClawHQ's own page: the cookies and the CSRF header."""
        return self.headers(csrf=self.csrf, **extra)


def set_cookies(reply: Any) -> dict[str, Any]:
    """The reply's Set-Cookie headers by cookie name (``http.cookies.Morsel`` each)."""
    found: dict[str, Any] = {}
    for header in reply.headers.get_list("set-cookie"):
        jar: SimpleCookie = SimpleCookie()
        jar.load(header)
        found.update(jar)
    return found


def account(api: Api) -> tuple[str, dict[str, str]]:
    """A new user's email and bearer headers."""
    email = f"s{uuid.uuid4().hex[:12]}@example.com"
    return email, api.user(email=email)


def cookie_login(api: Api, email: str) -> tuple[Any, Browser]:
    reply = api.client.post(
        "/api/auth/login", json={"email": email, "password": PASSWORD, "cookie": True}
    )
    assert reply.status_code == 200, reply.text
    api.client.cookies.clear()
    cookies = set_cookies(reply)
    browser = Browser(
        api,
        cookies[sessions.SESSION_COOKIE].value,
        cookies[sessions.CSRF_COOKIE].value,
        reply.json()["user"]["id"],
    )
    return reply, browser


def browser(api: Api) -> tuple[Browser, dict[str, str]]:
    """A user logged in both ways: a browser session and bearer headers."""
    email, bearer = account(api)
    return cookie_login(api, email)[1], bearer


def _whoami(user: Any, request: Any) -> JSONResponse:
    return JSONResponse({"id": user.id, "via": request.state.auth_via})


async def _origin_route(request: Request) -> JSONResponse:
    return _whoami(await sessions.user_from_request(request, csrf="origin"), request)


async def _header_route(request: Request) -> JSONResponse:
    return _whoami(await sessions.user_from_request(request), request)


async def _ws_route(websocket: WebSocket) -> None:
    try:
        user = await sessions.user_from_websocket(websocket)
    except ClawHQError as exc:
        await websocket.close(code=4000 + exc.status, reason=exc.code)
        return
    await websocket.accept()
    await websocket.send_json({"id": user.id, "via": websocket.state.auth_via})
    await websocket.close()


def mount_test_routes(app: FastAPI) -> None:
    """Raw endpoints like the agent proxy's, for this test's app only."""
    app.router.add_route("/test/origin", _origin_route, methods=["GET", "POST"])
    app.router.add_route("/test/header", _header_route, methods=["GET", "POST"])
    app.router.add_websocket_route("/test/ws", _ws_route)


@pytest.fixture
def api(fake_api: Api) -> Api:
    mount_test_routes(fake_api.client.app)  # type: ignore[arg-type]
    return fake_api


@pytest.fixture
def make_api(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Any]]:
    """Start another app over the in-memory runtime with settings overrides."""
    stack: list[Any] = []

    def start(**overrides: Any) -> Api:
        settings = make_settings(supervise=False, **overrides)
        manager = running_app(settings, FakeRuntime(images={TEST_IMAGE}), probe=lambda url: True)
        started = manager.__enter__()
        stack.append(manager)
        mount_test_routes(started.client.app)  # type: ignore[arg-type]
        return started

    yield start
    for manager in reversed(stack):
        manager.__exit__(None, None, None)


# -- login -------------------------------------------------------------------------------------


def test_a_cookie_login_sets_both_cookies_and_keeps_the_token_out_of_the_body(api: Api) -> None:
    email, _ = account(api)
    reply, session = cookie_login(api, email)
    body = reply.json()
    assert set(body) == {"user", "csrfToken"}
    assert body["user"]["email"] == email
    assert session.token.startswith("chq_") and session.token not in reply.text
    assert body["csrfToken"] == session.csrf == sessions.csrf_token(session.token)
    assert session.csrf != session.token

    cookies = set_cookies(reply)
    token_cookie, csrf_cookie = cookies["clawhq_session"], cookies["clawhq_csrf"]
    for cookie in (token_cookie, csrf_cookie):
        assert cookie["samesite"] == "lax"
        assert cookie["path"] == "/"
        assert cookie["max-age"] == str(24 * 3600)  # CLAWHQ_SESSION_TTL_HOURS' default
        assert not cookie["secure"]  # development, over plain http
    assert token_cookie["httponly"] and not csrf_cookie["httponly"]


def test_cookies_are_secure_outside_development(make_api: Callable[..., Api]) -> None:
    prod = make_api(env="production", firewall="off", session_ttl_hours=2)
    email, _ = account(prod)
    reply, _ = cookie_login(prod, email)
    cookies = set_cookies(reply)
    for name in ("clawhq_session", "clawhq_csrf"):
        assert cookies[name]["secure"], name
        assert cookies[name]["max-age"] == "7200"
        assert cookies[name]["samesite"] == "lax"
    assert cookies["clawhq_session"]["httponly"]


def test_a_login_without_cookie_answers_as_before(api: Api) -> None:
    email, _ = account(api)
    for body in ({}, {"cookie": False}):
        reply = api.client.post(
            "/api/auth/login", json={"email": email, "password": PASSWORD, **body}
        )
        assert reply.status_code == 200, reply.text
        assert set(reply.json()) == {"user", "token", "tokenType"}
        assert "set-cookie" not in reply.headers
    wrong = api.client.post(
        "/api/auth/login", json={"email": email, "password": PASSWORD, "cookie": "yes"}
    )
    assert wrong.status_code == 422 and wrong.json()["code"] == "validation_error"
    failed = api.client.post(
        "/api/auth/login", json={"email": email, "password": "wrong password", "cookie": True}
    )
    assert failed.status_code == 401 and failed.json()["code"] == "invalid_credentials"
    assert "set-cookie" not in failed.headers


def test_the_login_is_audited_as_a_browser_session(api: Api) -> None:
    session, _ = browser(api)
    with api.context.sessions() as db:
        query = select(AuditEvent).where(
            AuditEvent.user_id == session.user_id, AuditEvent.action == "auth.login"
        )
        logins = list(db.scalars(query))
    assert [(e.result, e.detail) for e in logins] == [("ok", "browser session")]


def test_the_tokens_list_shows_the_browser_session(api: Api) -> None:
    session, bearer = browser(api)
    listed = api.client.get("/api/auth/tokens", headers=session.headers())
    assert listed.status_code == 200, listed.text
    tokens = listed.json()["tokens"]
    assert [(t["name"], t["current"]) for t in tokens] == [
        ("browser session", True),
        ("login", False),
    ]
    expires = datetime.fromisoformat(tokens[0]["expiresAt"].replace("Z", "+00:00"))
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    assert abs(expires - (datetime.now(UTC) + timedelta(hours=24))) < timedelta(minutes=5)
    assert session.token not in listed.text
    by_bearer = api.client.get("/api/auth/tokens", headers=bearer).json()["tokens"]
    assert [t["current"] for t in by_bearer] == [False, True]


# -- requests made with the cookie -------------------------------------------------------------


def test_the_cookie_authenticates_reads(api: Api) -> None:
    session, _ = browser(api)
    me = api.client.get("/api/auth/me", headers=session.headers())
    assert me.status_code == 200, me.text
    assert me.json()["id"] == session.user_id
    assert api.client.get("/api/agents", headers=session.headers()).status_code == 200
    # A foreign Origin does not matter to a read: SameSite and CORS keep its answer away.
    foreign = session.headers(Origin="https://evil.example")
    assert api.client.get("/api/auth/me", headers=foreign).status_code == 200


def test_unsafe_cookie_requests_need_the_csrf_header(api: Api) -> None:
    session, bearer = browser(api)
    agent = api.agent(bearer)
    token_id = api.client.get("/api/auth/tokens", headers=bearer).json()["tokens"][1]["id"]
    forged = [
        session.headers(),
        session.headers(csrf="nope"),
        session.headers(csrf=""),
        session.headers(csrf=sessions.csrf_token("chq_someone-else")),
        session.headers(csrf=session.token),
        session.headers(Origin=api.context.settings.public_origin),  # no header, same origin
    ]
    for headers in forged:
        for method, path in (
            ("DELETE", f"/api/agents/{agent['id']}"),
            ("POST", f"/api/agents/{agent['id']}/stop"),
            ("DELETE", f"/api/auth/tokens/{token_id}"),
            ("POST", "/api/auth/logout"),
        ):
            reply = api.client.request(method, path, headers=headers)
            assert reply.status_code == 403, (method, path, reply.text)
            assert reply.json()["code"] == "csrf_failed"
            assert reply.headers["content-type"] == "application/problem+json"
            assert "X-CSRF-Token" in reply.json()["detail"]
    # Nothing changed.
    assert api.client.get(f"/api/agents/{agent['id']}", headers=bearer).status_code == 200
    assert api.client.get("/api/auth/me", headers=bearer).status_code == 200
    assert api.client.get("/api/auth/me", headers=session.headers()).status_code == 200
    assert len(api.client.get("/api/auth/tokens", headers=bearer).json()["tokens"]) == 2
    with api.context.sessions() as db:
        assert db.get(Agent, agent["id"]) is not None

    # With the header, the same requests go through.
    revoked = api.client.delete(f"/api/auth/tokens/{token_id}", headers=session.signed())
    assert revoked.status_code == 204, revoked.text
    assert api.client.get("/api/auth/me", headers=bearer).status_code == 401
    deleted = api.client.delete(f"/api/agents/{agent['id']}", headers=session.signed())
    assert deleted.status_code == 204, deleted.text
    created = api.client.post(
        "/api/agents",
        json={"name": "from-the-browser", "apiKey": "sk-test-0123456789"},
        headers=session.signed(),
    )
    assert created.status_code == 201, created.text


def test_bearer_requests_need_no_csrf_and_win_over_the_cookie(api: Api) -> None:
    session, _ = browser(api)
    _, other = account(api)
    other_id = other["X-User-Id"]
    agent = api.agent(other)
    # Bearer and someone else's cookie: the bearer token is the caller, and needs no header.
    both = {**other, **session.headers()}
    assert api.client.get("/api/auth/me", headers=both).json()["id"] == other_id
    stopped = api.client.post(f"/api/agents/{agent['id']}/stop", headers=both)
    assert stopped.status_code == 200, stopped.text
    assert api.client.delete(f"/api/agents/{agent['id']}", headers=other).status_code == 204
    # A bad bearer token is not rescued by a good cookie.
    bad = {"Authorization": "Bearer chq_nope", **session.headers()}
    reply = api.client.get("/api/auth/me", headers=bad)
    assert reply.status_code == 401 and reply.json()["code"] == "invalid_token"
    # Another scheme is no bearer token: the cookie is used (a proxy's Basic auth, say).
    basic = {"Authorization": "Basic dXNlcjpwYXNz", **session.headers()}
    assert api.client.get("/api/auth/me", headers=basic).json()["id"] == session.user_id


def test_a_bad_or_missing_cookie_is_a_401(api: Api) -> None:
    for cookie in ("clawhq_session=chq_nope", "clawhq_session=", "clawhq_csrf=x", "other=1"):
        reply = api.client.get("/api/auth/me", headers={"Cookie": cookie})
        assert reply.status_code == 401, cookie
        assert reply.json()["code"] in {"invalid_token", "unauthorized"}
    missing = api.client.post("/api/auth/logout", headers={"Cookie": "clawhq_session=chq_nope"})
    assert missing.status_code == 401 and missing.json()["code"] == "invalid_token"


def test_an_expired_session_is_a_401(api: Api) -> None:
    session, _ = browser(api)
    with api.context.sessions() as db:
        db.execute(
            update(ApiToken)
            .where(ApiToken.token_hash == hash_token(session.token))
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        db.commit()
    reply = api.client.get("/api/auth/me", headers=session.headers())
    assert reply.status_code == 401 and reply.json()["code"] == "token_expired"


def test_logout_ends_the_session_and_clears_its_cookies(api: Api) -> None:
    session, bearer = browser(api)
    assert api.client.get("/api/auth/me", headers=session.headers()).status_code == 200  # cached
    reply = api.client.post("/api/auth/logout", headers=session.signed())
    assert reply.status_code == 204, reply.text
    cleared = set_cookies(reply)
    for name in ("clawhq_session", "clawhq_csrf"):
        assert cleared[name].value == ""
        assert cleared[name]["max-age"] == "0"
        assert cleared[name]["path"] == "/"
    gone = api.client.get("/api/auth/me", headers=session.headers())
    assert gone.status_code == 401 and gone.json()["code"] == "invalid_token"
    assert api.client.get("/api/auth/me", headers=bearer).status_code == 200  # the other token
    names = [t["name"] for t in api.client.get("/api/auth/tokens", headers=bearer).json()["tokens"]]
    assert names == ["login"]
    # A bearer logout leaves cookies alone.
    bearer_out = api.client.post("/api/auth/logout", headers=bearer)
    assert bearer_out.status_code == 204 and "set-cookie" not in bearer_out.headers
    with api.context.sessions() as db:
        query = select(AuditEvent.detail).where(
            AuditEvent.user_id == session.user_id, AuditEvent.action == "auth.logout"
        )
        assert list(db.scalars(query)) == ["browser session", ""]


# -- user_from_request(csrf="origin") ----------------------------------------------------------


def test_origin_mode_accepts_cookie_posts_from_clawhqs_own_origin(api: Api) -> None:
    session, bearer = browser(api)
    origin = api.context.settings.public_origin
    accepted = [
        session.headers(Origin=origin),
        session.headers(Origin=origin.upper()),  # origins compare case-insensitively
        session.headers(Referer=f"{origin}/agents/a1/ui/?x=1"),  # no Origin: the Referer's
        session.signed(Origin="https://evil.example"),  # the header is proof enough
    ]
    for headers in accepted:
        reply = api.client.post("/test/origin", headers=headers)
        assert reply.status_code == 200, (headers, reply.text)
        assert reply.json() == {"id": session.user_id, "via": "cookie"}
    refused = [
        session.headers(),
        session.headers(Origin="https://evil.example"),
        session.headers(Origin="null"),
        session.headers(Origin=origin + ".evil.example"),
        session.headers(Origin=origin.replace("http://", "https://")),
        session.headers(Origin="https://evil.example", Referer=f"{origin}/"),  # Origin wins
        session.headers(Referer="https://evil.example/"),
        session.headers(csrf="wrong", Origin="https://evil.example"),
    ]
    for headers in refused:
        reply = api.client.post("/test/origin", headers=headers)
        assert reply.status_code == 403, (headers, reply.text)
        assert reply.json()["code"] == "csrf_failed"
    # Reads pass from anywhere; bearer requests need no proof at all.
    read = api.client.get("/test/origin", headers=session.headers(Origin="https://evil.example"))
    assert read.status_code == 200
    post = api.client.post("/test/origin", headers={**bearer, "Origin": "https://evil.example"})
    assert post.status_code == 200 and post.json()["via"] == "bearer"
    assert api.client.post("/test/origin").json()["code"] == "unauthorized"


def test_header_mode_is_what_current_user_does(api: Api) -> None:
    session, bearer = browser(api)
    origin = api.context.settings.public_origin
    refused = api.client.post("/test/header", headers=session.headers(Origin=origin))
    assert refused.status_code == 403 and refused.json()["code"] == "csrf_failed"
    assert api.client.post("/test/header", headers=session.signed()).json()["via"] == "cookie"
    assert api.client.post("/test/header", headers=bearer).json()["via"] == "bearer"


def test_origin_mode_compares_with_the_public_url(make_api: Callable[..., Api]) -> None:
    behind = make_api(public_url="https://HQ.example.com:443/clawhq")
    session, _ = browser(behind)
    for origin in ("https://hq.example.com", "https://hq.example.com:443"):
        reply = behind.client.post("/test/origin", headers=session.headers(Origin=origin))
        assert reply.status_code == 200, (origin, reply.text)
    for origin in ("http://hq.example.com", "https://hq.example.com:8443", "http://127.0.0.1:8000"):
        reply = behind.client.post("/test/origin", headers=session.headers(Origin=origin))
        assert reply.status_code == 403, origin


# -- user_from_websocket -----------------------------------------------------------------------


def ws(api: Api, headers: dict[str, str]) -> dict[str, Any] | tuple[int, str]:
    """What /test/ws answers: the caller, or the close code and reason of a refusal."""
    try:
        with api.client.websocket_connect("/test/ws", headers=headers) as socket:
            return socket.receive_json()  # type: ignore[no-any-return]
    except WebSocketDisconnect as exc:
        return exc.code, exc.reason


def test_websockets_check_the_origin_of_a_cookie(api: Api) -> None:
    session, _ = browser(api)
    origin = api.context.settings.public_origin
    assert ws(api, session.headers(Origin=origin)) == {"id": session.user_id, "via": "cookie"}
    for headers in (
        session.headers(),  # no Origin: not from a page of ours
        session.headers(Origin="https://evil.example"),
        session.headers(Origin="null"),
        session.signed(Origin="https://evil.example"),  # the CSRF header changes nothing here
        session.headers(Referer=f"{origin}/"),  # nor does a Referer
    ):
        assert ws(api, headers) == (4403, "origin_not_allowed"), headers


def test_websockets_take_bearer_tokens_from_clients_that_are_not_browsers(api: Api) -> None:
    session, bearer = browser(api)
    origin = api.context.settings.public_origin
    me = bearer["X-User-Id"]
    assert ws(api, bearer) == {"id": me, "via": "bearer"}
    assert ws(api, {**bearer, "Origin": origin}) == {"id": me, "via": "bearer"}
    assert ws(api, {**bearer, "Origin": "https://evil.example"}) == (4403, "origin_not_allowed")
    # Bearer wins over the cookie here too.
    assert ws(api, {**bearer, **session.headers()}) == {"id": me, "via": "bearer"}
    assert ws(api, {}) == (4401, "unauthorized")
    assert ws(api, {"Authorization": "Bearer chq_nope"}) == (4401, "invalid_token")
    bad_cookie = {"Cookie": "clawhq_session=chq_nope", "Origin": origin}
    assert ws(api, bad_cookie) == (4401, "invalid_token")


def test_websockets_charge_the_users_request_budget(make_api: Callable[..., Api]) -> None:
    small = make_api(rate_limit_user=3)
    _, bearer = account(small)
    assert small.client.get("/api/auth/me", headers=bearer).status_code == 200
    assert ws(small, bearer) == {"id": bearer["X-User-Id"], "via": "bearer"}
    assert small.client.post("/test/header", headers=bearer).status_code == 200
    assert ws(small, bearer) == (4429, "rate_limited")
    assert small.client.get("/api/auth/me", headers=bearer).json()["code"] == "rate_limited"


# -- helpers for the proxy ---------------------------------------------------------------------


def test_the_csrf_value_is_fixed_by_the_token_and_reveals_nothing_of_it() -> None:
    first, second = sessions.csrf_token("chq_a"), sessions.csrf_token("chq_b")
    assert first == sessions.csrf_token("chq_a") and first != second
    assert len(first) == 43 and "=" not in first and "chq_a" not in first
