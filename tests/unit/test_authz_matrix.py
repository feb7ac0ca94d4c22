"""Every endpoint x every kind of caller, with the status each must get (OWASP API1, API2, API5).

The endpoints come from the app's own routes: a route added without an entry in ``EXPECTED``
fails ``test_every_endpoint_is_in_the_matrix``, and one added without authentication fails
``test_anonymous_callers_are_rejected_everywhere_but_public_routes`` as well.
"""

from __future__ import annotations

import io
import tarfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import select

from clawhq.api.app import create_app
from tests.conftest import Api, handed_secrets
from tests.doubles.runtime import FakeRuntime
from tests.standins.gateway import serving
from tests.unit.test_api_agents import wait_status

PASSWORD = "correct horse battery"


class Caller(StrEnum):
    ANONYMOUS = "anonymous"
    BAD_TOKEN = "bad token"
    EXPIRED_TOKEN = "expired token"
    AGENT_TOKEN = "agent's webhook token"
    OTHER_USER = "another user"
    ADMIN = "admin"
    OWNER = "owner"


# Callers in the order they call each endpoint: the ones that change something come last.
ORDER = tuple(Caller)
REJECTED = {
    Caller.ANONYMOUS: 401,
    Caller.BAD_TOKEN: 401,
    Caller.EXPIRED_TOKEN: 401,
    Caller.AGENT_TOKEN: 401,  # a webhook token is not a user token
}


@dataclass(frozen=True)
class Expect:
    statuses: dict[Caller, int]
    body: Callable[[World], Any] | None = None
    public: bool = False


def everyone(status: int) -> dict[Caller, int]:
    return dict.fromkeys(Caller, status)


def users(owner: int, other: int, admin: int) -> dict[Caller, int]:
    """A user route: the owner, someone else and an admin; every non-user credential is a 401."""
    return {**REJECTED, Caller.OWNER: owner, Caller.OTHER_USER: other, Caller.ADMIN: admin}


AGENT_ROUTE = users(owner=200, other=404, admin=404)  # someone else's agent does not exist
ADMIN_ONLY = users(owner=403, other=403, admin=200)


#: The routes an agent's origin is served by (clawhq.api.routes.agent_origin).
AGENT_ORIGIN = "/_agent/{agent_id}"


class FormBody(dict[str, str]):
    """A body sent as an HTML form (the dashboard's), not as JSON."""


class RawBody(bytes):
    """A body sent as it is (a backup upload)."""


def workspace_archive(world: World | None) -> RawBody:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("notes.md")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    return RawBody(buffer.getvalue())


def clone_body(world: World) -> dict[str, str]:
    return {"name": f"clone-{uuid.uuid4().hex[:8]}", "apiKey": "sk-test-0123456789"}


EXPECTED: dict[tuple[str, str], Expect] = {
    # Public: no credentials needed, and credentials change nothing.
    ("GET", "/health"): Expect(everyone(200), public=True),
    ("GET", "/openapi.json"): Expect(everyone(200), public=True),
    ("GET", "/docs"): Expect(everyone(200), public=True),
    ("GET", "/docs/oauth2-redirect"): Expect(everyone(200), public=True),
    ("GET", "/redoc"): Expect(everyone(200), public=True),
    # Served to loopback (as the test client is) unless CLAWHQ_METRICS_TOKEN is set; see
    # tests/unit/test_observability.py for the token and clawhq/api/routes/metrics.py.
    ("GET", "/metrics"): Expect(everyone(200), public=True),
    ("POST", "/api/auth/register"): Expect(
        everyone(201),
        lambda w: {"email": f"r{uuid.uuid4().hex[:10]}@example.com", "password": PASSWORD},
        public=True,
    ),
    ("POST", "/api/auth/login"): Expect(
        everyone(200), lambda w: {"email": w.owner_email, "password": PASSWORD}, public=True
    ),
    # The caller's own account and agents.
    ("GET", "/api/auth/me"): Expect(users(200, 200, 200)),
    # Each caller logs out (revokes) its own token; the owner's token id is nobody else's.
    ("POST", "/api/auth/logout"): Expect(users(204, 204, 204)),
    ("GET", "/api/auth/tokens"): Expect(users(200, 200, 200)),
    ("DELETE", "/api/auth/tokens/{token_id}"): Expect(users(204, 404, 404)),
    ("GET", "/api/agents"): Expect(users(200, 200, 200)),
    ("POST", "/api/agents"): Expect(
        users(201, 201, 201), lambda w: {"name": "m", "apiKey": "sk-test-0123456789"}
    ),
    ("GET", "/api/agents/{agent_id}"): Expect(AGENT_ROUTE),
    ("POST", "/api/agents/{agent_id}/deploy"): Expect(users(202, 404, 404)),
    ("POST", "/api/agents/{agent_id}/start"): Expect(users(202, 404, 404)),
    ("POST", "/api/agents/{agent_id}/stop"): Expect(AGENT_ROUTE),
    ("DELETE", "/api/agents/{agent_id}"): Expect(users(204, 404, 404)),
    ("GET", "/api/agents/{agent_id}/logs"): Expect(AGENT_ROUTE),
    ("GET", "/api/agents/{agent_id}/stats"): Expect(AGENT_ROUTE),
    ("GET", "/api/agents/{agent_id}/events"): Expect(AGENT_ROUTE),
    ("GET", "/api/agents/{agent_id}/progress"): Expect(AGENT_ROUTE),
    # The agent's own webhook: only its current webhook token, never a user's token.
    ("POST", "/api/agents/{agent_id}/webhook"): Expect(
        {**everyone(401), Caller.AGENT_TOKEN: 200}, lambda w: {"type": "heartbeat"}
    ),
    # Admins only; users are refused with 403, other credentials with 401.
    ("PATCH", "/api/admin/users/{user_id}"): Expect(
        users(owner=403, other=403, admin=200), lambda w: {"plan": "team"}
    ),
    ("GET", "/api/admin/users"): Expect(users(owner=403, other=403, admin=200)),
    ("DELETE", "/api/admin/users/{user_id}/tokens"): Expect(users(owner=403, other=403, admin=200)),
    ("GET", "/api/admin/agents"): Expect(users(owner=403, other=403, admin=200)),
    ("GET", "/api/admin/audit"): Expect(users(owner=403, other=403, admin=200)),
    ("POST", "/api/admin/agents/{agent_id}/stop"): Expect(users(owner=403, other=403, admin=200)),
    ("PATCH", "/api/admin/agents/{agent_id}"): Expect(
        users(owner=403, other=403, admin=200), lambda w: {"image": None}
    ),
    ("PATCH", "/api/admin/plans/{plan_name}"): Expect(
        users(owner=403, other=403, admin=200), lambda w: {"image": None}
    ),
    ("POST", "/api/admin/rollouts"): Expect(
        users(owner=403, other=403, admin=201), lambda w: {"agents": [w.agent_id]}
    ),
    ("GET", "/api/admin/rollouts"): Expect(users(owner=403, other=403, admin=200)),
    ("GET", "/api/admin/rollouts/{rollout_id}"): Expect(users(owner=403, other=403, admin=200)),
    # The world's rollout has finished: an admin gets past authorization to invalid_state.
    ("POST", "/api/admin/rollouts/{rollout_id}/pause"): Expect(users(403, 403, admin=409)),
    ("POST", "/api/admin/rollouts/{rollout_id}/resume"): Expect(users(403, 403, admin=409)),
    ("POST", "/api/admin/rollouts/{rollout_id}/abort"): Expect(users(403, 403, admin=409)),
    # The agent's own gateway (a stand-in here), for its owner only; an admin is nobody's owner.
    ("GET", "/login"): Expect(everyone(200), public=True),
    # On ClawHQ's origin, GET is the way to the agent's own origin (a one-time code, followed
    # there to the gateway); nothing else is served: 404 agent_on_own_origin once signed in.
    ("GET", "/agents/{agent_id}"): Expect(AGENT_ROUTE),
    ("GET", "/agents/{agent_id}/{path:path}"): Expect(AGENT_ROUTE),
    **{
        (method, "/agents/{agent_id}/{path:path}"): Expect(users(404, 404, 404))
        for method in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS")
    },
    # The agent's own origin (called with its Host; World.call): the gateway for its owner,
    # a bearer token standing in for the origin's access cookie; ``/`` redirects to the base.
    **{
        (method, f"{AGENT_ORIGIN}{rest}"): Expect(AGENT_ROUTE)
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
        for rest in ("", "/{rest:path}")
    },
    # Without a one-time code from /agents/{id}/ nobody gets the origin's cookie.
    ("GET", f"{AGENT_ORIGIN}/_clawhq/open"): Expect(everyone(401)),
    ("POST", "/api/agents/{agent_id}/v1/chat/completions"): Expect(
        AGENT_ROUTE, lambda w: {"model": "openclaw", "messages": []}
    ),
    ("GET", "/api/agents/{agent_id}/v1/models"): Expect(AGENT_ROUTE),
    # Usage from the LLM gateway's ledger: the owner's agent, the caller's month, admins' all.
    ("GET", "/api/agents/{agent_id}/usage"): Expect(AGENT_ROUTE),
    # Backups: someone else's agent, and so its backups, do not exist.
    ("POST", "/api/agents/{agent_id}/backups"): Expect(users(202, 404, 404)),
    ("GET", "/api/agents/{agent_id}/backups"): Expect(AGENT_ROUTE),
    ("GET", "/api/agents/{agent_id}/backups/{backup_id:backup_id}"): Expect(AGENT_ROUTE),
    ("DELETE", "/api/agents/{agent_id}/backups/{backup_id:backup_id}"): Expect(
        users(204, 404, 404)
    ),
    ("POST", "/api/agents/{agent_id}/backups/{backup_id:backup_id}/restore"): Expect(
        users(202, 404, 404)
    ),
    ("GET", "/api/agents/{agent_id}/backups/{backup_id:backup_id}/download"): Expect(AGENT_ROUTE),
    ("POST", "/api/agents/{agent_id}/backups/import"): Expect(
        users(201, 404, 404), workspace_archive
    ),
    ("POST", "/api/agents/{agent_id}/backups/{backup_id:backup_id}/clone"): Expect(
        users(201, 404, 404), clone_body
    ),
    ("GET", "/api/usage"): Expect(users(200, 200, 200)),
    ("GET", "/api/admin/usage"): Expect(users(owner=403, other=403, admin=200)),
    ("GET", "/api/admin/plans"): Expect(users(owner=403, other=403, admin=200)),
    ("PATCH", "/api/admin/plans/{plan_name}/llm"): Expect(
        users(owner=403, other=403, admin=200), lambda w: {}
    ),
    # Plans' egress and workspace size: admins only (the world's plan is reset right after).
    ("PATCH", "/api/admin/plans/{plan_name}/egress"): Expect(
        users(owner=403, other=403, admin=200), lambda w: {"policy": "open"}
    ),
    ("PATCH", "/api/admin/plans/{plan_name}/disk"): Expect(
        users(owner=403, other=403, admin=200), lambda w: {"agentDisk": None}
    ),
    ("PATCH", "/api/admin/plans/{plan_name}/backups"): Expect(
        users(owner=403, other=403, admin=200), lambda w: {"backupSchedule": "off"}
    ),
    # The dashboard (clawhq/web/): its pages take the same credentials as the API (a bearer
    # token here; browsers use the session cookie); a form that changes something redirects
    # (303, followed) to the page showing the result. Streams end within the world's
    # CLAWHQ_STREAM_MAX_SECONDS (1 s).
    ("GET", "/"): Expect(everyone(200), public=True),  # the sign-in page for anyone else
    ("GET", "/ui/signup"): Expect(everyone(200), public=True),
    ("GET", "/ui/static/{digest}/{name:path}"): Expect(everyone(200), public=True),
    # Sign-in and sign-up forms take no credentials; an empty form gets its messages.
    ("POST", "/ui/signin"): Expect(everyone(422), public=True),
    ("POST", "/ui/signup"): Expect(everyone(422), public=True),
    ("POST", "/ui/signout"): Expect(users(200, 200, 200)),
    ("GET", "/ui/agents/new"): Expect(users(200, 200, 200)),
    ("POST", "/ui/agents"): Expect(
        users(200, 200, 200),
        lambda w: FormBody(name="m", keySource="own", apiKey="sk-test-0123456789"),
    ),
    ("GET", "/ui/agents/{agent_id}"): Expect(AGENT_ROUTE),
    ("GET", "/ui/agents/{agent_id}/delete"): Expect(AGENT_ROUTE),
    ("GET", "/ui/agents/{agent_id}/logs"): Expect(AGENT_ROUTE),
    ("GET", "/ui/agents/{agent_id}/logs/follow"): Expect(AGENT_ROUTE),
    ("GET", "/ui/agents/{agent_id}/stats"): Expect(AGENT_ROUTE),
    ("GET", "/ui/agents/{agent_id}/events"): Expect(AGENT_ROUTE),
    ("GET", "/ui/agents/{agent_id}/usage"): Expect(AGENT_ROUTE),
    ("GET", "/ui/agents/{agent_id}/progress"): Expect(AGENT_ROUTE),
    ("GET", "/ui/live/agents"): Expect(users(200, 200, 200)),
    ("GET", "/ui/live/agents/{agent_id}"): Expect(AGENT_ROUTE),
    ("POST", "/ui/agents/{agent_id}/deploy"): Expect(AGENT_ROUTE),
    ("POST", "/ui/agents/{agent_id}/start"): Expect(AGENT_ROUTE),
    ("POST", "/ui/agents/{agent_id}/stop"): Expect(AGENT_ROUTE),
    ("POST", "/ui/agents/{agent_id}/delete"): Expect(AGENT_ROUTE),
    ("GET", "/ui/tokens"): Expect(users(200, 200, 200)),
    ("POST", "/ui/tokens"): Expect(users(201, 201, 201), lambda w: FormBody(password=PASSWORD)),
    # The owner revokes its own token (and is signed out: the sign-in page follows).
    ("POST", "/ui/tokens/{token_id}/revoke"): Expect(users(200, 404, 404)),
    ("GET", "/ui/usage"): Expect(users(200, 200, 200)),
    **{
        ("GET", f"/ui/admin{page}"): Expect(ADMIN_ONLY)
        for page in ("", "/users", "/agents", "/audit", "/plans", "/rollouts", "/usage")
    },
    ("GET", "/ui/admin/rollouts/{rollout_id}/live"): Expect(ADMIN_ONLY),
    ("POST", "/ui/admin/rollouts"): Expect(
        ADMIN_ONLY, lambda w: FormBody(selector="agents", agents=w.agent_id)
    ),
    # The world's rollout has finished: an admin gets past authorization to invalid_state.
    ("POST", "/ui/admin/rollouts/{rollout_id}/{action}"): Expect(users(403, 403, admin=409)),
    ("POST", "/ui/admin/agents/{agent_id}/start"): Expect(ADMIN_ONLY),
    ("POST", "/ui/admin/agents/{agent_id}/stop"): Expect(ADMIN_ONLY),
    ("POST", "/ui/admin/agents/{agent_id}/image"): Expect(ADMIN_ONLY, lambda w: FormBody(image="")),
    ("POST", "/ui/admin/users/{user_id}/plan"): Expect(ADMIN_ONLY, lambda w: FormBody(plan="team")),
    ("POST", "/ui/admin/users/{user_id}/start-all"): Expect(ADMIN_ONLY),
    ("POST", "/ui/admin/users/{user_id}/stop-all"): Expect(ADMIN_ONLY),
    ("POST", "/ui/admin/users/{user_id}/tokens/revoke"): Expect(ADMIN_ONLY),
    ("POST", "/ui/admin/plans/{plan_name}/llm"): Expect(ADMIN_ONLY),
    ("POST", "/ui/admin/plans/{plan_name}/egress"): Expect(
        ADMIN_ONLY, lambda w: FormBody(policy="open")
    ),
    ("POST", "/ui/admin/plans/{plan_name}/disk"): Expect(ADMIN_ONLY),
    ("POST", "/ui/admin/plans/{plan_name}/image"): Expect(ADMIN_ONLY),
    # The LLM gateway takes an agent container's LLM token only (tests/unit/test_llm_gateway.py):
    # no user's token, no webhook token.
    ("GET", "/llm/{provider}/{path:path}"): Expect(everyone(401)),
    ("POST", "/llm/{provider}/{path:path}"): Expect(everyone(401), lambda w: {"model": "m"}),
}


def endpoints(app: FastAPI) -> Iterator[tuple[str, str]]:
    """(method, path) of every route the app serves, however routers are included."""
    for route in app.routes:
        contexts = getattr(route, "effective_route_contexts", None)
        found = [c.original_route for c in contexts()] if contexts else [route]
        for leaf in found:
            for method in sorted(getattr(leaf, "methods", None) or ()):
                if method != "HEAD":
                    yield method, leaf.path  # type: ignore[attr-defined]


APP_ENDPOINTS = sorted(set(endpoints(create_app(lambda: None))))  # type: ignore[arg-type, return-value]


@dataclass
class World:
    api: Api
    owner: dict[str, str]
    owner_email: str
    other: dict[str, str]
    admin: dict[str, str]
    agent_id: str
    webhook_token: str
    expired_token: str
    headers: dict[Caller, dict[str, str]] = field(default_factory=dict)
    rollout_id: str = ""
    token_id: str = ""
    backup_id: str = ""

    def path(self, template: str) -> str:
        template = template.replace("{path:path}", "{path}").replace("{name:path}", "{name}")
        template = template.replace("{backup_id:backup_id}", "{backup_id}")
        return template.format(
            agent_id=self.agent_id,
            user_id=self.other["X-User-Id"],
            rollout_id=self.rollout_id,
            token_id=self.token_id,
            backup_id=self.backup_id,
            plan_name="pro",
            provider="anthropic",
            path="page",
            digest="0",
            name="app.css",
            action="pause",
        )

    def url(self, template: str) -> str:
        """The URL a route answers at: an agent-origin route on the agent's own origin."""
        if not template.startswith(AGENT_ORIGIN):
            return self.path(template)
        rest = template.removeprefix(AGENT_ORIGIN)
        path = "/" if not rest else self.path("/agents/{agent_id}/page" if "{" in rest else rest)
        return self.api.context.settings.agent_origin_of(self.agent_id) + path

    def call(self, method: str, path: str, caller: Caller, body: Any = None) -> int:
        headers = {k: v for k, v in self.headers[caller].items() if k == "Authorization"}
        sent: dict[str, Any] = {"data": body} if isinstance(body, FormBody) else {"json": body}
        if isinstance(body, RawBody):
            sent = {"content": bytes(body)}
        reply = self.api.client.request(method, self.url(path), headers=headers, **sent)
        return reply.status_code


@pytest.fixture
def settings(make_settings: Callable[..., Any]) -> Any:
    """The world's settings: streams that do not end by themselves end within a second."""
    return make_settings(stream_max_seconds=1)


@pytest.fixture
def world(fake_api: Api, fake_runtime: FakeRuntime) -> Iterator[World]:
    from clawhq.db.models import User
    from clawhq.services import users as user_service

    api = fake_api
    owner_email = f"owner{uuid.uuid4().hex[:8]}@example.com"
    owner = api.user(plan="pro", email=owner_email)
    other, admin = api.user(plan="pro"), api.user(plan="pro")
    with api.context.sessions() as session:
        session.get(User, admin["X-User-Id"]).is_admin = True
        expired = user_service.issue_token(
            session, session.get(User, owner["X-User-Id"]), "login", timedelta(seconds=-1)
        )
        session.commit()
    agent = api.agent(owner)
    deployed = api.client.post(f"/api/agents/{agent['id']}/deploy", headers=owner)
    assert deployed.status_code == 202, deployed.text
    # A READY backup to aim at (imported: taking one would stop and start the agent).
    archive = bytes(workspace_archive(None))  # type: ignore[arg-type]
    backup_id = api.context.backups.import_archive(agent["id"], owner["X-User-Id"], [archive]).id
    container_id = deployed.json()["containerId"]
    token = handed_secrets(fake_runtime, container_id)["CLAWHQ_WEBHOOK_TOKEN"]
    world = World(api, owner, owner_email, other, admin, agent["id"], token, expired)
    world.backup_id = backup_id
    world.rollout_id = finished_rollout(api, agent["id"])
    world.token_id = token_id(api, owner)
    world.headers = {
        Caller.ANONYMOUS: {},
        Caller.BAD_TOKEN: {"Authorization": "Bearer chq_not-a-real-token"},
        Caller.EXPIRED_TOKEN: {"Authorization": f"Bearer {expired}"},
        Caller.AGENT_TOKEN: {"Authorization": f"Bearer {token}"},
        Caller.OTHER_USER: other,
        Caller.ADMIN: admin,
        Caller.OWNER: owner,
    }
    wait_status(api, owner, agent["id"], "RUNNING")
    address = fake_runtime.containers[container_id].address
    with serving(address, api.context.settings.agent_internal_port):  # the agent's gateway
        yield world


def token_id(api: Api, headers: dict[str, str]) -> str:
    from clawhq.credentials import hash_token
    from clawhq.db.models import ApiToken

    digest = hash_token(headers["Authorization"].split()[1])
    with api.context.sessions() as session:
        return session.scalars(select(ApiToken.id).where(ApiToken.token_hash == digest)).one()


def finished_rollout(api: Api, agent_id: str) -> str:
    from clawhq.controller import rollouts

    with api.context.sessions() as session:
        rollout = rollouts.start(
            session,
            selector={"agents": [agent_id]},
            image=None,
            max_unavailable=1,
            max_failures=1,
            created_by="test",
        )
        rollouts.abort(session, rollout.id, rollout.created_at)
        session.commit()
        return rollout.id


def test_every_endpoint_is_in_the_matrix() -> None:
    missing = [f"{m} {p}" for m, p in APP_ENDPOINTS if (m, p) not in EXPECTED]
    stale = [f"{m} {p}" for m, p in EXPECTED if (m, p) not in APP_ENDPOINTS]
    assert not missing, f"new endpoints need their expected statuses in EXPECTED: {missing}"
    assert not stale, f"EXPECTED lists endpoints the app no longer has: {stale}"


def test_anonymous_callers_are_rejected_everywhere_but_public_routes(world: World) -> None:
    answered = {}
    for method, path in APP_ENDPOINTS:
        expect = EXPECTED.get((method, path))
        if expect is not None and expect.public:
            continue
        body = expect.body(world) if expect and expect.body else {}
        status = world.call(method, path, Caller.ANONYMOUS, body)
        if status != 401:
            answered[f"{method} {path}"] = status
    assert not answered, f"answered an anonymous caller with something else than 401: {answered}"


MATRIX = [e for e in APP_ENDPOINTS if e in EXPECTED]


@pytest.mark.parametrize(("method", "path"), MATRIX, ids=[f"{m} {p}" for m, p in MATRIX])
def test_each_caller_gets_the_expected_status(world: World, method: str, path: str) -> None:
    expect = EXPECTED[(method, path)]
    got = {}
    for caller in ORDER:
        body = expect.body(world) if expect.body else None
        got[caller] = world.call(method, path, caller, body)
    wrong = {c.value: (got[c], s) for c, s in expect.statuses.items() if got[c] != s}
    assert not wrong, f"{method} {path}: caller -> (got, expected): {wrong}"


def test_lists_show_only_the_callers_agents(world: World) -> None:
    for caller in (Caller.OTHER_USER, Caller.ADMIN):
        body = world.api.client.get("/api/agents", headers=world.headers[caller]).json()
        assert world.agent_id not in [a["id"] for a in body["agents"]]
    mine = world.api.client.get("/api/agents", headers=world.owner).json()
    assert [a["id"] for a in mine["agents"]] == [world.agent_id]
