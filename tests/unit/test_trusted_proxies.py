"""Clients behind a reverse proxy (issue 13, item 5): ``CLAWHQ_TRUSTED_PROXIES`` decides whose
``X-Forwarded-For`` counts; login limits, the audit log, the agent proxy and ``/metrics`` see
the address it gives; failed logins are limited per account as well."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from ipaddress import ip_network
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from clawhq.api.app import create_app
from clawhq.api.ratelimit import RateLimiter
from clawhq.clients import MAX_FORWARDED_CHARS, client_address, client_scheme
from clawhq.context import AppContext, build_context
from clawhq.db.models import AuditEvent
from clawhq.errors import ConfigError
from clawhq.proxy.http import target
from clawhq.proxy.upstreams import Upstream
from clawhq.settings import Settings, load_settings
from tests.doubles.runtime import FakeRuntime

PROXY = "10.0.0.1"
PASSWORD = "correct horse battery"
TRUSTED = (ip_network("10.0.0.0/24"), ip_network("fd00::/64"))


def scope(peer: str | None, *forwarded: str) -> dict[str, Any]:
    headers = [(b"x-forwarded-for", value.encode("latin-1")) for value in forwarded]
    return {
        "type": "http",
        "method": "GET",
        "path": "/",
        "query_string": b"",
        "scheme": "http",
        "server": ("testserver", 80),
        "headers": [(b"host", b"testserver"), *headers],
        "client": (peer, 4711) if peer is not None else None,
    }


# -- resolving the client ----------------------------------------------------------------------


def test_without_trusted_proxies_the_peer_is_the_client_whatever_the_header_says() -> None:
    assert client_address(scope("203.0.113.7", "198.51.100.1"), ()) == "203.0.113.7"
    assert client_address(scope(None, "198.51.100.1"), ()) == ""


def test_a_forwarded_address_from_an_untrusted_peer_is_ignored() -> None:
    assert client_address(scope("203.0.113.7", "127.0.0.1"), TRUSTED) == "203.0.113.7"
    assert client_address(scope("testclient", "198.51.100.1"), TRUSTED) == "testclient"


def test_a_trusted_proxy_names_the_client() -> None:
    assert client_address(scope(PROXY, "198.51.100.1"), TRUSTED) == "198.51.100.1"
    assert client_address(scope(PROXY), TRUSTED) == PROXY  # no header: the proxy itself
    # A dual-stack socket gives IPv4 peers as IPv4-mapped IPv6 addresses.
    assert client_address(scope("::ffff:10.0.0.1", "198.51.100.1"), TRUSTED) == "198.51.100.1"
    assert client_address(scope("fd00::2", "[2001:db8::1]"), TRUSTED) == "2001:db8::1"


def test_a_chain_of_proxies_is_read_from_the_right() -> None:
    # The client wrote "192.0.2.66" itself; 198.51.100.1 is who reached the outer proxy.
    chain = scope(PROXY, "192.0.2.66, 198.51.100.1, 10.0.0.2")
    assert client_address(chain, TRUSTED) == "198.51.100.1"
    # Several header lines are one list, in order.
    lines = scope(PROXY, "192.0.2.66", "198.51.100.1", "10.0.0.2, 10.0.0.3")
    assert client_address(lines, TRUSTED) == "198.51.100.1"
    # Only trusted proxies in it: the request started at the left-most.
    assert client_address(scope(PROXY, "10.0.0.9, 10.0.0.2"), TRUSTED) == "10.0.0.9"


@pytest.mark.parametrize(
    "header",
    [
        "garbage",
        "",
        " , ",
        "198.51.100.1,",
        "198.51.100.1:443",
        "unknown, 10.0.0.2",
        "198.51.100.1, not an address",
        "\x00\xff",
        "1" * 5000,
    ],
)
def test_garbage_falls_back_to_the_peer(header: str) -> None:
    assert client_address(scope(PROXY, header), TRUSTED) == PROXY


def test_a_long_header_is_read_only_at_its_right_end() -> None:
    padded = "192.0.2.66, " * 2000 + "198.51.100.1"
    assert len(padded) > MAX_FORWARDED_CHARS
    assert client_address(scope(PROXY, padded), TRUSTED) == "198.51.100.1"
    # Cut in the middle of trusted proxies only: who started the chain is unknown.
    proxies = ", ".join(["10.0.0.2"] * 500)
    assert client_address(scope(PROXY, proxies), TRUSTED) == PROXY


def test_the_setting_takes_addresses_and_networks_of_both_families(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CLAWHQ_TRUSTED_PROXIES", raising=False)
    assert load_settings().trusted_proxies == ()
    monkeypatch.setenv("CLAWHQ_TRUSTED_PROXIES", " 10.0.0.5, fd00::/64,192.168.0.0/16 ")
    assert load_settings().trusted_proxies == (
        ip_network("10.0.0.5/32"),
        ip_network("fd00::/64"),
        ip_network("192.168.0.0/16"),
    )
    monkeypatch.setenv("CLAWHQ_TRUSTED_PROXIES", "10.0.0.0/33")
    with pytest.raises(ConfigError, match="CLAWHQ_TRUSTED_PROXIES"):
        load_settings()


# -- the rate limiter ---------------------------------------------------------------------------


def test_a_refund_gives_back_one_request_and_never_more_than_the_limit() -> None:
    now = [0.0]
    limiter = RateLimiter(2, window=3600, clock=lambda: now[0])
    assert [limiter.retry_after("a") for _ in range(2)] == [0, 0]
    assert limiter.retry_after("a") > 0
    limiter.refund("a")
    assert limiter.retry_after("a") == 0
    limiter.refund("fresh")  # nothing spent: nothing to give back
    limiter.refund("fresh")
    assert [limiter.retry_after("fresh") for _ in range(3)][-1] > 0


def test_sprayed_keys_stay_bounded_and_the_recently_used_stay() -> None:
    limiter = RateLimiter(5, window=3600, max_keys=100)
    for _ in range(5):
        limiter.retry_after("victim")
    for n in range(1000):
        limiter.retry_after(f"spray-{n}")
        if n % 50 == 0:
            assert limiter.retry_after("victim") > 0  # used, so kept: still out of budget
    assert len(limiter) <= 100


# -- through the API ---------------------------------------------------------------------------


def peer_from_header(app: ASGIApp) -> ASGIApp:
    """The app, with each request's TCP peer taken from ``X-Test-Peer`` (the test client's is
    "testclient")."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            peer = dict(scope["headers"]).get(b"x-test-peer")
            if peer:
                scope = {**scope, "client": (peer.decode(), 4711)}
        await app(scope, receive, send)

    return wrapped


class Behind:
    def __init__(self, client: TestClient, context: AppContext) -> None:
        self.client = client
        self.context = context

    def login(self, email: str, password: str, peer: str, forwarded: str | None = None) -> Any:
        headers = {"X-Test-Peer": peer}
        if forwarded is not None:
            headers["X-Forwarded-For"] = forwarded
        return self.client.post(
            "/api/auth/login", json={"email": email, "password": password}, headers=headers
        )

    def register(self, email: str) -> None:
        reply = self.client.post(
            "/api/auth/register",
            json={"email": email, "password": PASSWORD},
            headers={"X-Test-Peer": "127.0.0.1"},
        )
        assert reply.status_code == 201, reply.text

    def clients_audited(self, email: str) -> list[str | None]:
        with self.context.sessions() as session:
            rows = session.scalars(
                select(AuditEvent)
                .where(AuditEvent.action == "auth.login", AuditEvent.detail == f"email {email}")
                .order_by(AuditEvent.id)
            )
            return [row.client for row in rows]


@pytest.fixture
def behind(
    make_settings: Callable[..., Settings], fake_runtime: FakeRuntime
) -> Callable[..., contextlib.AbstractContextManager[Behind]]:
    @contextlib.contextmanager
    def start(**overrides: Any) -> Iterator[Behind]:
        values = {"supervise": False, "trusted_proxies": "10.0.0.0/24", "rate_limit_auth": 2}
        settings = make_settings(**{**values, **overrides})
        holder: dict[str, AppContext] = {}

        def make() -> AppContext:
            holder["context"] = build_context(settings, runtime=fake_runtime)
            return holder["context"]

        app = peer_from_header(create_app(make))
        with TestClient(app, raise_server_exceptions=False) as client:
            yield Behind(client, holder["context"])

    return start


def email() -> str:
    return f"p{uuid.uuid4().hex[:12]}@example.com"


def test_a_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(behind: Any) -> None:
    with behind() as api:
        who = email()
        codes = [
            api.login(
                who if n == 0 else email(), "wrong password!", "203.0.113.7", f"198.51.100.{n}"
            ).status_code
            for n in range(3)
        ]
        assert codes == [401, 401, 429]  # one budget: the peer's
        assert api.clients_audited(who) == ["203.0.113.7"]


def test_two_clients_behind_a_trusted_proxy_have_their_own_login_budgets(behind: Any) -> None:
    with behind() as api:
        first = [api.login(email(), "wrong password!", PROXY, "198.51.100.1") for _ in range(3)]
        assert [r.status_code for r in first] == [401, 401, 429]
        assert first[-1].json()["code"] == "rate_limited"
        assert int(first[-1].headers["retry-after"]) >= 1
        who = email()
        assert api.login(who, "wrong password!", PROXY, "198.51.100.2").status_code == 401
        assert api.clients_audited(who) == ["198.51.100.2"]  # the audit log sees the same


def test_behind_a_chain_of_proxies_the_client_is_the_right_most_untrusted(behind: Any) -> None:
    with behind() as api:
        # The client rewrites the left of the header each time; its budget stays its own.
        codes = [
            api.login(
                email(), "wrong password!", PROXY, f"192.0.2.{n}, 198.51.100.1, 10.0.0.2"
            ).status_code
            for n in range(3)
        ]
        assert codes == [401, 401, 429]
        assert api.login(email(), "wrong password!", PROXY, "198.51.100.3").status_code == 401


def test_garbage_forwarded_for_counts_against_the_proxy_and_breaks_nothing(behind: Any) -> None:
    with behind() as api:
        garbage = ["nonsense", "198.51.100.1, <script>", "\t,,", "x" * 10_000]
        codes = [api.login(email(), "wrong password!", PROXY, g).status_code for g in garbage]
        assert codes == [401, 401, 429, 429]  # all the proxy's own budget, no 500
        assert api.login(email(), "wrong password!", PROXY, "198.51.100.1").status_code == 401


def test_metrics_behind_a_trusted_proxy_need_the_token(behind: Any) -> None:
    loopback = {"X-Test-Peer": "127.0.0.1"}
    with behind() as api:
        refused = api.client.get("/metrics", headers=loopback)
        assert refused.status_code == 403
        assert refused.json()["code"] == "metrics_token_required"
        assert "CLAWHQ_METRICS_TOKEN" in refused.json()["detail"]
    with behind(metrics_token=SecretStr("m3tr1cs")) as api:
        assert api.client.get("/metrics", headers=loopback).status_code == 401
        ok = api.client.get("/metrics", headers={**loopback, "Authorization": "Bearer m3tr1cs"})
        assert ok.status_code == 200
    with behind(trusted_proxies="") as api:  # no proxies: loopback, and only the real one
        assert api.client.get("/metrics", headers=loopback).status_code == 200
        spoofed = {"X-Test-Peer": "203.0.113.7", "X-Forwarded-For": "127.0.0.1"}
        assert api.client.get("/metrics", headers=spoofed).status_code == 403


def test_failed_logins_are_limited_per_account_from_any_address(behind: Any) -> None:
    with behind(rate_limit_login_account=3) as api:
        victim = email()
        api.register(victim)
        spread = [
            api.login(address, "wrong password!", PROXY, f"198.51.100.{n}")
            for n, address in enumerate([victim, victim.upper(), victim])
        ]
        assert [r.status_code for r in spread] == [401, 401, 401]
        # Out of budget: even the right password waits, from yet another address.
        limited = api.login(victim, PASSWORD, PROXY, "198.51.100.9")
        assert limited.status_code == 429
        assert limited.json()["code"] == "rate_limited"
        assert int(limited.headers["retry-after"]) >= 1
        # An account that does not exist is limited the same way: nothing to tell them apart.
        ghost = email()
        ghosts = [
            api.login(ghost, "wrong password!", PROXY, f"198.51.100.{20 + n}") for n in range(4)
        ]
        assert [r.status_code for r in ghosts] == [401, 401, 401, 429]
        assert ghosts[-1].json()["detail"].split(";")[0] == limited.json()["detail"].split(";")[0]
        assert api.login(email(), "wrong password!", PROXY, "198.51.100.30").status_code == 401


def test_successful_logins_do_not_count_and_do_not_clear_failures(behind: Any) -> None:
    with behind(rate_limit_login_account=3, rate_limit_auth=100) as api:
        owner = email()
        api.register(owner)
        assert all(
            api.login(owner, PASSWORD, PROXY, "198.51.100.1").status_code == 200 for _ in range(5)
        )
        assert api.login(owner, "wrong password!", PROXY, "198.51.100.2").status_code == 401
        assert api.login(owner, "wrong password!", PROXY, "198.51.100.3").status_code == 401
        assert api.login(owner, PASSWORD, PROXY, "198.51.100.1").status_code == 200
        assert api.login(owner, "wrong password!", PROXY, "198.51.100.4").status_code == 401
        assert api.login(owner, "wrong password!", PROXY, "198.51.100.5").status_code == 429


# -- the agent proxy ---------------------------------------------------------------------------


def test_the_agent_proxy_forwards_the_resolved_client(
    make_settings: Callable[..., Settings],
) -> None:
    upstream = Upstream("a1", "u1", "http://172.18.0.5:18789", "identity", "172.18.0.1")
    trusting = make_settings(trusted_proxies="10.0.0.0/24")
    plain = make_settings()

    def forwarded(settings: Settings, peer: str, *header: str) -> str:
        _, headers = target(Request(scope(peer, *header)), upstream, "/x", settings)
        values = [v for k, v in headers if k == "x-forwarded-for"]
        assert len(values) == 1
        return values[0]

    assert forwarded(trusting, PROXY, "192.0.2.66, 198.51.100.1") == "198.51.100.1"
    assert forwarded(trusting, "203.0.113.7", "198.51.100.1") == "203.0.113.7"
    assert forwarded(plain, PROXY, "198.51.100.1") == PROXY
    assert forwarded(trusting, PROXY, "garbage") == PROXY
    assert forwarded(trusting, PROXY, "127.0.0.1") == "192.0.2.1"  # still unattributable


def test_only_a_trusted_proxy_says_the_client_came_over_tls(
    make_settings: Callable[..., Settings],
) -> None:
    """X-Forwarded-Proto reaches the agent's gateway from a trusted proxy only."""
    upstream = Upstream("a1", "u1", "http://172.18.0.5:18789", "identity", "172.18.0.1")
    trusting = make_settings(trusted_proxies="10.0.0.0/24")

    def proto(settings: Settings, peer: str, *values: str) -> str:
        request = scope(peer)
        request["headers"] += [(b"x-forwarded-proto", value.encode()) for value in values]
        _, headers = target(Request(request), upstream, "/x", settings)
        (sent,) = [v for k, v in headers if k == "x-forwarded-proto"]
        assert client_scheme(request, settings.trusted_proxies) == sent
        return sent

    assert proto(trusting, PROXY, "https") == "https"
    assert proto(trusting, PROXY, "http, https") == "https"  # the nearest proxy's word
    assert proto(trusting, PROXY) == "http"
    assert proto(trusting, PROXY, "gopher") == "http"
    assert proto(trusting, "203.0.113.7", "https") == "http"  # not a proxy ClawHQ trusts
    assert proto(make_settings(), PROXY, "https") == "http"  # no trusted proxies at all
