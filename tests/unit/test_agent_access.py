"""The proxy to an agent's gateway, over the in-memory runtime and a stand-in gateway that
listens on the fake container's own (loopback) address: who gets through, what crosses, what
never does, and the limits."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import WebSocketDenialResponse

from clawhq.crypto import Sealed
from clawhq.db.models import Agent, AuditEvent, proxy_identity_context
from clawhq.settings import Settings
from tests.conftest import Api, running_app
from tests.doubles.runtime import FakeRuntime
from tests.standins.gateway import free_port, serving
from tests.unit.test_api_agents import wait_status

PASSWORD = "correct horse battery"
ORIGIN = "http://127.0.0.1:8000"  # the default public origin of the test settings


class Owner:
    def __init__(self, api: Api) -> None:
        self.email = f"o{uuid.uuid4().hex[:12]}@example.com"
        self.bearer = api.user(email=self.email)
        self.id = self.bearer["X-User-Id"]

    def login_cookie(self, api: Api) -> str:
        """Log in as a browser would; the client keeps the cookies. Returns the CSRF token."""
        reply = api.client.post(
            "/api/auth/login", json={"email": self.email, "password": PASSWORD, "cookie": True}
        )
        assert reply.status_code == 200, reply.text
        return str(reply.json()["csrfToken"])


@contextlib.contextmanager
def proxied_app(
    make_settings: Callable[..., Settings], fake_runtime: FakeRuntime, **overrides: Any
) -> Iterator[tuple[Api, Callable[..., Any]]]:
    """The API over the in-memory runtime, and a way to get a RUNNING agent whose stand-in
    gateway answers on its container's address (``gateway=False``: nothing answers there)."""
    port = free_port()
    values = {"supervise": False, "agent_internal_port": port, "proxy_idle_seconds": 5}
    settings = make_settings(**{**values, **overrides})
    with ExitStack() as stack:
        api = stack.enter_context(running_app(settings, fake_runtime, probe=lambda url: True))

        def running_agent(owner: Owner, *, gateway: bool = True) -> dict[str, Any]:
            agent = api.agent(owner.bearer)
            reply = api.client.post(f"/api/agents/{agent['id']}/deploy", headers=owner.bearer)
            assert reply.status_code == 202, reply.text
            wait_status(api, owner.bearer, agent["id"], "RUNNING")
            if gateway:
                container = next(
                    c for c in fake_runtime.containers.values() if c.agent_id == agent["id"]
                )
                stack.enter_context(serving(container.address, port))
            return agent

        yield api, running_agent


@pytest.fixture
def proxy_api(
    make_settings: Callable[..., Settings], fake_runtime: FakeRuntime
) -> Iterator[tuple[Api, Callable[..., Any]]]:
    with proxied_app(make_settings, fake_runtime) as found:
        yield found


def identity_of(api: Api, agent_id: str) -> str:
    with api.context.sessions() as session:
        row = session.get(Agent, agent_id)
        assert row is not None and row.proxy_identity_ciphertext is not None
        sealed = Sealed(row.proxy_identity_ciphertext, str(row.proxy_identity_key_id))
    return api.context.keyring.open(sealed, proxy_identity_context(agent_id))


def test_the_owner_reaches_the_gateway_with_the_identity_and_without_clawhqs_credentials(
    proxy_api: tuple[Api, Callable[..., Any]],
) -> None:
    api, running_agent = proxy_api
    owner = Owner(api)
    agent = running_agent(owner)
    forged = {
        "X-ClawHQ-Identity": "forged",
        "X-Forwarded-For": "203.0.113.9",
        "X-Forwarded-User": "admin@example.com",
        "Cookie": "theme=dark; clawhq_session=stolen",
    }
    reply = api.client.get(
        f"/agents/{agent['id']}/some/page?session=main", headers={**owner.bearer, **forged}
    )
    assert reply.status_code == 200, reply.text
    seen = reply.json()
    assert seen["path"] == f"/agents/{agent['id']}/some/page"
    assert seen["query"] == "session=main"
    headers = seen["headers"]
    assert headers["x-clawhq-identity"] == identity_of(api, agent["id"])
    assert headers["x-forwarded-for"] == "192.0.2.1"  # the test client is no address
    assert "x-forwarded-user" not in headers
    assert "authorization" not in headers
    assert headers["cookie"] == "theme=dark"


def test_a_browser_session_reaches_the_gateway_and_the_agent_never_sees_its_cookies(
    proxy_api: tuple[Api, Callable[..., Any]],
) -> None:
    api, running_agent = proxy_api
    owner = Owner(api)
    agent = running_agent(owner)
    owner.login_cookie(api)
    page = api.client.get(f"/agents/{agent['id']}/", headers={"Accept": "text/html"})
    assert page.status_code == 200, page.text
    assert "cookie" not in page.json()["headers"]
    # A cookie request that changes something must come from ClawHQ's own origin.
    assert api.client.post(f"/agents/{agent['id']}/x", content=b"{}").status_code == 403
    ok = api.client.post(f"/agents/{agent['id']}/x", content=b"{}", headers={"Origin": ORIGIN})
    assert ok.status_code == 200 and ok.json()["bodyLength"] == 2


def test_nobody_else_gets_through(proxy_api: tuple[Api, Callable[..., Any]]) -> None:
    api, running_agent = proxy_api
    owner, other = Owner(api), Owner(api)
    agent = running_agent(owner)
    path = f"/agents/{agent['id']}/"
    refused = api.client.get(path, headers=other.bearer)
    assert refused.status_code == 404 and refused.json()["code"] == "agent_not_found"
    admin = api.client.get(path, headers=api.admin())
    assert admin.status_code == 404  # an owner's agent is theirs alone, admins included
    anonymous = api.client.get(path)
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == "application/problem+json"
    browser = api.client.get(path, headers={"Accept": "text/html"}, follow_redirects=False)
    assert browser.status_code == 303
    assert browser.headers["location"] == f"/login?next=/agents/{agent['id']}/"
    chat = api.client.post(f"/api/agents/{agent['id']}/v1/chat/completions", json={})
    assert chat.status_code == 401


def test_the_agent_cannot_set_cookies_on_clawhqs_origin(
    proxy_api: tuple[Api, Callable[..., Any]],
) -> None:
    api, running_agent = proxy_api
    owner = Owner(api)
    agent = running_agent(owner)
    reply = api.client.get(f"/agents/{agent['id']}/cookie", headers=owner.bearer)
    assert reply.status_code == 200 and reply.headers["x-gateway"] == "stand-in"
    assert "set-cookie" not in reply.headers


def test_events_stream_through(proxy_api: tuple[Api, Callable[..., Any]]) -> None:
    api, running_agent = proxy_api
    owner = Owner(api)
    agent = running_agent(owner)
    with api.client.stream("GET", f"/agents/{agent['id']}/events", headers=owner.bearer) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        assert "".join(r.iter_text()) == "data: 0\n\ndata: 1\n\ndata: 2\n\n"


def test_a_stopped_or_unreachable_agent_is_a_problem_not_a_hang(
    proxy_api: tuple[Api, Callable[..., Any]],
) -> None:
    api, running_agent = proxy_api
    owner = Owner(api)
    down = running_agent(owner, gateway=False)  # RUNNING, but nothing answers on its address
    reply = api.client.get(f"/agents/{down['id']}/", headers=owner.bearer)
    assert reply.status_code == 503 and reply.json()["code"] == "agent_not_running"
    assert reply.headers["retry-after"] == "5"
    api.client.post(f"/api/agents/{down['id']}/stop", headers=owner.bearer)
    wait_status(api, owner.bearer, down["id"], "STOPPED")
    stopped = api.client.post(
        f"/api/agents/{down['id']}/v1/chat/completions", json={}, headers=owner.bearer
    )
    assert stopped.status_code == 409
    assert stopped.json()["code"] == "agent_not_running"
    assert stopped.json()["agentStatus"] == "STOPPED"


def test_the_chat_api_goes_to_the_gateways_own_endpoint(
    proxy_api: tuple[Api, Callable[..., Any]],
) -> None:
    api, running_agent = proxy_api
    owner = Owner(api)
    agent = running_agent(owner)
    body = {"model": "openclaw", "messages": [{"role": "user", "content": "hi" * 40_000}]}
    reply = api.client.post(
        f"/api/agents/{agent['id']}/v1/chat/completions", json=body, headers=owner.bearer
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["path"] == "/v1/chat/completions"
    assert reply.json()["bodyLength"] > 64 * 1024  # over the API's own body limit
    models = api.client.get(f"/api/agents/{agent['id']}/v1/models", headers=owner.bearer)
    assert models.json()["path"] == "/v1/models"


def test_request_bodies_over_the_proxy_limit_are_refused(
    make_settings: Callable[..., Settings], fake_runtime: FakeRuntime
) -> None:
    with proxied_app(make_settings, fake_runtime, proxy_max_message="1k") as (api, running):
        owner = Owner(api)
        agent = running(owner, gateway=False)
        reply = api.client.post(
            f"/api/agents/{agent['id']}/v1/chat/completions",
            content=b"x" * 2048,
            headers=owner.bearer,
        )
        assert reply.status_code == 413 and reply.json()["code"] == "payload_too_large"


def test_the_websocket_relays_both_ways_for_the_owner_only(
    proxy_api: tuple[Api, Callable[..., Any]],
) -> None:
    api, running_agent = proxy_api
    owner, other = Owner(api), Owner(api)
    agent = running_agent(owner)
    path = f"/agents/{agent['id']}/ws"
    with api.client.websocket_connect(path, headers={**owner.bearer, "Origin": ORIGIN}) as ws:
        first = ws.receive_json()
        assert first["headers"]["x-clawhq-identity"] == identity_of(api, agent["id"])
        assert first["headers"]["origin"] == ORIGIN
        assert "authorization" not in first["headers"]
        ws.send_text("hello")
        assert ws.receive_text() == "echo:hello"
    # Where the Control UI opens it: the base path itself, no trailing slash.
    with api.client.websocket_connect(f"/agents/{agent['id']}", headers=owner.bearer) as ws:
        assert ws.receive_json()["headers"]["x-clawhq-identity"]
    with (
        pytest.raises(WebSocketDenialResponse) as denied,
        api.client.websocket_connect(path, headers=other.bearer),
    ):
        pass
    assert denied.value.status_code == 404
    with (
        pytest.raises(WebSocketDenialResponse) as foreign,
        api.client.websocket_connect(
            path, headers={**owner.bearer, "Origin": "https://evil.example"}
        ),
    ):
        pass
    assert foreign.value.status_code == 403
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with api.context.sessions() as session:
            audited = session.scalars(
                select(AuditEvent.action).where(AuditEvent.agent_id == agent["id"])
            ).all()
        if "agent.session_open" in audited:
            break
        time.sleep(0.05)
    assert "agent.session_open" in audited


def test_connections_per_user_are_limited_and_activity_is_recorded(
    make_settings: Callable[..., Settings], fake_runtime: FakeRuntime
) -> None:
    with proxied_app(make_settings, fake_runtime, proxy_connections_per_user=1) as (api, running):
        owner = Owner(api)
        agent = running(owner)
        with api.client.websocket_connect(f"/agents/{agent['id']}/ws", headers=owner.bearer) as ws:
            ws.receive_json()
            busy = api.client.get(f"/agents/{agent['id']}/", headers=owner.bearer)
            assert busy.status_code == 429
            assert busy.json()["code"] == "too_many_connections"
        again = api.client.get(f"/agents/{agent['id']}/", headers=owner.bearer)
        assert again.status_code == 200
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            shown = api.client.get(f"/api/agents/{agent['id']}", headers=owner.bearer).json()
            if shown.get("lastActiveAt"):
                break
            time.sleep(0.05)
        assert shown["lastActiveAt"]


def test_a_gateway_that_does_not_answer_in_time_is_a_504(
    make_settings: Callable[..., Settings], fake_runtime: FakeRuntime
) -> None:
    with proxied_app(make_settings, fake_runtime, proxy_timeout=0.3) as (api, running):
        owner = Owner(api)
        agent = running(owner)
        slow = api.client.get(f"/agents/{agent['id']}/slow", headers=owner.bearer)
        assert slow.status_code == 504 and slow.json()["code"] == "agent_timeout"
        fine = api.client.get(f"/agents/{agent['id']}/page", headers=owner.bearer)
        assert fine.status_code == 200  # and its slot came back
