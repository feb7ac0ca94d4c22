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


def origin_of(agent_id: str) -> str:
    """The agent's own origin under the test settings (CLAWHQ_AGENT_ORIGIN's default)."""
    return f"http://{agent_id}.agents.localhost:8000"


def at(agent_id: str, path: str = "/", scheme: str = "http") -> str:
    """``path`` on the agent's own origin (``/agents/{id}`` prefixed when relative)."""
    if not path.startswith("/agents/"):
        path = f"/agents/{agent_id}{path}"
    return origin_of(agent_id).replace("http", scheme, 1) + path


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
        at(agent["id"], "/some/page?session=main"), headers={**owner.bearer, **forged}
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
    # ClawHQ's origin hands the browser over to the agent's own, with a one-time code.
    hop = api.client.get(f"/agents/{agent['id']}/", follow_redirects=False)
    assert hop.status_code == 303
    assert hop.headers["location"].startswith(f"{origin_of(agent['id'])}/_clawhq/open?code=")
    page = api.client.get(hop.headers["location"], headers={"Accept": "text/html"})
    assert page.status_code == 200, page.text
    assert page.url == at(agent["id"], "/")
    assert "cookie" not in page.json()["headers"]  # neither ClawHQ's session nor the ticket
    # The code was good once.
    again = api.client.get(hop.headers["location"], follow_redirects=False)
    assert again.status_code == 401 and again.json()["code"] == "access_code_invalid"
    # A cookie request that changes something must come from the agent's own origin.
    assert api.client.post(at(agent["id"], "/x"), content=b"{}").status_code == 403
    foreign = api.client.post(at(agent["id"], "/x"), content=b"{}", headers={"Origin": ORIGIN})
    assert foreign.status_code == 403
    own = {"Origin": origin_of(agent["id"])}
    ok = api.client.post(at(agent["id"], "/x"), content=b"{}", headers=own)
    assert ok.status_code == 200 and ok.json()["bodyLength"] == 2
    # The access cookie is this agent's only: another agent's origin does not take it.
    other = running_agent(Owner(api))
    assert api.client.get(at(other["id"], "/"), follow_redirects=False).status_code == 401


def test_nobody_else_gets_through(proxy_api: tuple[Api, Callable[..., Any]]) -> None:
    api, running_agent = proxy_api
    owner, other = Owner(api), Owner(api)
    agent = running_agent(owner)
    path = at(agent["id"], "/")
    refused = api.client.get(path, headers=other.bearer)
    assert refused.status_code == 404 and refused.json()["code"] == "agent_not_found"
    admin = api.client.get(path, headers=api.admin())
    assert admin.status_code == 404  # an owner's agent is theirs alone, admins included
    # Anyone else's browser is sent to ClawHQ's origin, which asks them to sign in...
    page = {"Accept": "text/html"}
    anonymous = api.client.get(path, headers=page, follow_redirects=False)
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == f"{ORIGIN}/agents/{agent['id']}/"
    browser = api.client.get(f"/agents/{agent['id']}/", headers=page, follow_redirects=False)
    assert browser.status_code == 303
    assert browser.headers["location"] == f"/login?next=/agents/{agent['id']}/"
    # ...and a client that is no browser is told 401, on either origin.
    assert api.client.get(path, follow_redirects=False).status_code == 401
    assert api.client.get(f"/agents/{agent['id']}/", follow_redirects=False).status_code == 401
    chat = api.client.post(f"/api/agents/{agent['id']}/v1/chat/completions", json={})
    assert chat.status_code == 401
    # ... and gives no code for an agent that is not theirs.
    other.login_cookie(api)
    assert api.client.get(f"/agents/{agent['id']}/").status_code == 404
    posted = api.client.post(path, content=b"{}")
    assert posted.status_code == 401, posted.text


def test_the_agent_cannot_set_cookies_on_clawhqs_origin(
    proxy_api: tuple[Api, Callable[..., Any]],
) -> None:
    api, running_agent = proxy_api
    owner = Owner(api)
    agent = running_agent(owner)
    reply = api.client.get(at(agent["id"], "/cookie"), headers=owner.bearer)
    assert reply.status_code == 200
    assert "set-cookie" not in reply.headers
    assert "x-gateway" not in reply.headers  # not on the list of what may pass


def test_events_stream_through(proxy_api: tuple[Api, Callable[..., Any]]) -> None:
    api, running_agent = proxy_api
    owner = Owner(api)
    agent = running_agent(owner)
    with api.client.stream("GET", at(agent["id"], "/events"), headers=owner.bearer) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        assert "".join(r.iter_text()) == "data: 0\n\ndata: 1\n\ndata: 2\n\n"


def test_a_stopped_or_unreachable_agent_is_a_problem_not_a_hang(
    proxy_api: tuple[Api, Callable[..., Any]],
) -> None:
    api, running_agent = proxy_api
    owner = Owner(api)
    down = running_agent(owner, gateway=False)  # RUNNING, but nothing answers on its address
    reply = api.client.get(at(down["id"], "/"), headers=owner.bearer)
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
    path = at(agent["id"], "/ws", scheme="ws")
    own = origin_of(agent["id"])
    with api.client.websocket_connect(path, headers={**owner.bearer, "Origin": own}) as ws:
        first = ws.receive_json()
        assert first["headers"]["x-clawhq-identity"] == identity_of(api, agent["id"])
        assert first["headers"]["origin"] == own
        assert "authorization" not in first["headers"]
        ws.send_text("hello")
        assert ws.receive_text() == "echo:hello"
    # Where the Control UI opens it: the base path itself, no trailing slash.
    root = at(agent["id"], f"/agents/{agent['id']}", scheme="ws")
    with api.client.websocket_connect(root, headers=owner.bearer) as ws:
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
            path,
            headers={**owner.bearer, "Origin": ORIGIN},  # not the agent's own origin
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
        socket = at(agent["id"], "/ws", scheme="ws")
        with api.client.websocket_connect(socket, headers=owner.bearer) as ws:
            ws.receive_json()
            busy = api.client.get(at(agent["id"], "/"), headers=owner.bearer)
            assert busy.status_code == 429
            assert busy.json()["code"] == "too_many_connections"
        again = api.client.get(at(agent["id"], "/"), headers=owner.bearer)
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
        slow = api.client.get(at(agent["id"], "/slow"), headers=owner.bearer)
        assert slow.status_code == 504 and slow.json()["code"] == "agent_timeout"
        fine = api.client.get(at(agent["id"], "/page"), headers=owner.bearer)
        assert fine.status_code == 200  # and its slot came back


def test_nothing_an_agent_answers_acts_on_an_origin(
    proxy_api: tuple[Api, Callable[..., Any]],
) -> None:
    """A hostile gateway's Service-Worker-Allowed, Clear-Site-Data, Refresh, cookies, CORS,
    HSTS… reach no browser: on the agent's own origin nor (the chat API) on ClawHQ's, where
    whatever the agent answers is sandboxed besides."""
    from tests.standins.gateway import HOSTILE_HEADERS

    api, running_agent = proxy_api
    owner = Owner(api)
    agent = running_agent(owner)
    own = api.client.get(at(agent["id"], "/hostile"), headers=owner.bearer)
    assert own.status_code == 200 and own.json()["path"] == f"/agents/{agent['id']}/hostile"
    for name in HOSTILE_HEADERS:
        assert name.lower() not in own.headers, name
    assert "content-security-policy" not in own.headers  # its own origin: its own business
    from clawhq.api.routes import agent_access

    path = f"/api/agents/{agent['id']}/v1/models"
    assert agent_access.is_proxied(path)
    chat = api.client.get(path, headers=owner.bearer)
    assert chat.status_code == 200
    assert chat.headers["content-security-policy"] == "sandbox"


@pytest.mark.parametrize(
    "sneaky",
    [
        "/..%2F..%2Fversion",
        "/%2e%2e/%2e%2e/x",
        "/%252e%252e/%252e%252e/x",
        "/..\\..\\x",
        "/%2e%2e%5c%2e%2e%5cx",
    ],
)
def test_a_path_that_leaves_the_agents_base_path_once_decoded_is_refused(
    proxy_api: tuple[Api, Callable[..., Any]], sneaky: str
) -> None:
    api, running_agent = proxy_api
    owner = Owner(api)
    agent = running_agent(owner)
    url = origin_of(agent["id"]) + f"/agents/{agent['id']}" + sneaky
    reply = api.client.get(url, headers=owner.bearer)
    assert reply.status_code == 400, reply.text
    assert reply.json()["code"] == "path_outside_agent"
    owner.login_cookie(api)
    here = api.client.get(f"/agents/{agent['id']}{sneaky}", follow_redirects=False)
    assert here.status_code == 400 and here.json()["code"] == "path_outside_agent"


def test_clawhqs_own_routes_are_not_on_an_agents_origin(
    proxy_api: tuple[Api, Callable[..., Any]],
) -> None:
    api, running_agent = proxy_api
    owner = Owner(api)
    agent = running_agent(owner)
    for path in ("/api/agents", "/api/auth/me", "/metrics", "/login"):
        reply = api.client.get(origin_of(agent["id"]) + path, headers=owner.bearer)
        # Anything outside /agents/{id}/ there is a path outside the agent.
        assert reply.status_code == 400 and reply.json()["code"] == "path_outside_agent", path
    # Nor is the internal prefix reachable on ClawHQ's origin.
    internal = api.client.get(f"/_agent/{agent['id']}/agents/{agent['id']}/", headers=owner.bearer)
    assert internal.status_code == 404
