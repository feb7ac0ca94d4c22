"""``clawhq doctor``'s "workspace disk caps" and "egress proxy" checks (with the fake runtime;
the proxy is knocked on for real, on loopback)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from clawhq.cli.doctor import Check, run_checks
from clawhq.context import build_context
from clawhq.db.models import Plan
from clawhq.egress.proxy import EgressAgent, EgressProxy
from clawhq.runtime.security import NetworkFacts
from clawhq.settings import Settings
from tests.doubles.runtime import FakeRuntime

MakeSettings = Callable[..., Settings]
NO_ROOT = "ClawHQ does not run as root (loop mounts need it)"


def check(make_settings: MakeSettings, runtime: FakeRuntime, name: str, **overrides: Any) -> Check:
    context = build_context(make_settings(**overrides), runtime=runtime, threads=False)
    try:
        (found,) = [c for c in run_checks(context) if c.name == name]
    finally:
        context.close()
    return found


def set_plan(make_settings: MakeSettings, **fields: Any) -> None:
    from sqlalchemy.orm import Session

    from clawhq.db.engine import create_db_engine

    engine = create_db_engine(make_settings().resolved_database_url)
    with Session(engine) as session, session.begin():
        plan = session.get(Plan, "pro")
        assert plan is not None
        for key, value in fields.items():
            setattr(plan, key, value)
    engine.dispose()


@contextlib.contextmanager
def listener(answer: bytes | None = None) -> Iterator[int]:
    """A loopback port something listens on (answering ``answer`` to whatever it is sent)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                with conn:
                    conn.recv(4096)
                    if answer is not None:
                        conn.sendall(answer)

    if answer is not None:
        threading.Thread(target=serve, daemon=True).start()
    try:
        yield int(server.getsockname()[1])
    finally:
        server.close()


@contextlib.contextmanager
def clawhq_proxy() -> Iterator[int]:
    """ClawHQ's own egress proxy on loopback, in a loop of its own (as in `clawhq serve`)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def nobody(token: str) -> EgressAgent | None:
        return None

    proxy = EgressProxy(nobody, ())
    asyncio.run_coroutine_threadsafe(proxy.start("127.0.0.1", 0), loop).result(5)
    try:
        yield proxy.port
    finally:
        asyncio.run_coroutine_threadsafe(proxy.aclose(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def runtime(fake_runtime: FakeRuntime) -> FakeRuntime:
    """The fake engine, with an egress network whose gateway is loopback."""
    facts = NetworkFacts(
        id="n1",
        name="clawhq-test-egress",
        driver="bridge",
        bridge="br-n1",
        subnets=("127.0.0.0/8",),
        gateways=("127.0.0.1",),
        icc=False,
        ipv6=False,
        internal=False,
    )
    fake_runtime.network_facts = lambda name: facts  # type: ignore[attr-defined]
    return fake_runtime


# -- workspace disk caps -----------------------------------------------------------------------


def test_disk_caps_that_can_be_made_pass(make_settings: MakeSettings, runtime: FakeRuntime) -> None:
    found = check(make_settings, runtime, "workspace disk caps", env="production")
    assert found.ok and "can be made" in found.detail


def test_disk_caps_turned_off_pass_and_say_so(
    make_settings: MakeSettings, runtime: FakeRuntime
) -> None:
    runtime.disk_problem = NO_ROOT
    found = check(make_settings, runtime, "workspace disk caps", env="production", agent_disk="off")
    assert found.ok and found.detail.startswith("off:") and "docs/disks.md" in found.detail


def test_disk_caps_unavailable_fail_in_production_only(
    make_settings: MakeSettings, runtime: FakeRuntime
) -> None:
    runtime.disk_problem = NO_ROOT
    prod = check(make_settings, runtime, "workspace disk caps", env="production")
    assert not prod.ok
    assert NO_ROOT in prod.detail and "disk_quota_unavailable" in prod.detail
    assert "docs/disks.md" in prod.detail and "CLAWHQ_AGENT_DISK=off" in prod.detail
    dev = check(make_settings, runtime, "workspace disk caps")
    assert dev.ok and dev.detail.startswith(f"unavailable ({NO_ROOT}") and "uncapped" in dev.detail


def test_a_plans_size_needs_the_disks_even_when_the_setting_is_off(
    make_settings: MakeSettings, runtime: FakeRuntime
) -> None:
    runtime.disk_problem = NO_ROOT
    set_plan(make_settings, agent_disk=4 * 1024**3)
    found = check(make_settings, runtime, "workspace disk caps", env="production", agent_disk="off")
    assert not found.ok and "unavailable" in found.detail


# -- egress proxy ------------------------------------------------------------------------------


def test_the_proxy_is_not_checked_when_no_plan_uses_the_allowlist(
    make_settings: MakeSettings, runtime: FakeRuntime
) -> None:
    found = check(make_settings, runtime, "egress proxy", env="production")
    assert found.ok and found.detail.startswith("not checked: no plan uses the allowlist")


def test_the_proxy_is_not_checked_before_the_egress_network_exists(
    make_settings: MakeSettings, runtime: FakeRuntime
) -> None:
    set_plan(make_settings, egress_policy="allowlist")
    runtime.network_facts = lambda name: None  # type: ignore[attr-defined]
    found = check(make_settings, runtime, "egress proxy", env="production")
    assert found.ok and found.detail.startswith("not checked: network clawhq-test-egress does not")


def test_clawhqs_listening_proxy_passes(make_settings: MakeSettings, runtime: FakeRuntime) -> None:
    set_plan(make_settings, egress_policy="allowlist")
    with clawhq_proxy() as port:
        found = check(make_settings, runtime, "egress proxy", env="production", **_ports(port))
    assert found.ok and found.detail == f"listening on 127.0.0.1:{port}: ClawHQ's proxy answers"


def test_something_else_on_the_port_fails_in_production(
    make_settings: MakeSettings, runtime: FakeRuntime
) -> None:
    set_plan(make_settings, egress_policy="allowlist")
    with listener(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n") as port:
        found = check(make_settings, runtime, "egress proxy", env="production", **_ports(port))
        dev = check(make_settings, runtime, "egress proxy", **_ports(port))
    assert not found.ok and "not ClawHQ's proxy" in found.detail and "200 OK" in found.detail
    assert "CLAWHQ_EGRESS_PROXY_PORT" in found.detail and "docs/egress.md" in found.detail
    assert dev.ok and "not ClawHQ's proxy" in dev.detail  # reported, as /health does


def test_no_proxy_while_serve_is_not_running_passes(
    make_settings: MakeSettings, runtime: FakeRuntime
) -> None:
    set_plan(make_settings, egress_policy="allowlist")
    found = check(make_settings, runtime, "egress proxy", env="production", **_ports(free_port()))
    assert found.ok and "connection refused" in found.detail
    assert "`clawhq serve` is not running" in found.detail


def test_no_proxy_while_serve_answers_fails_in_production(
    make_settings: MakeSettings, runtime: FakeRuntime
) -> None:
    set_plan(make_settings, egress_policy="allowlist")
    with listener() as api_port:
        overrides = {**_ports(free_port()), "port": api_port}
        found = check(make_settings, runtime, "egress proxy", env="production", **overrides)
    assert not found.ok and "while ClawHQ's API answers" in found.detail
    assert "egress proxy cannot listen on" in found.detail and "docs/egress.md" in found.detail


def _ports(proxy: int) -> dict[str, Any]:
    """The proxy on ``proxy``; ClawHQ's API on a port nothing listens on, unless told."""
    return {"egress_proxy_port": proxy, "port": free_port()}


def test_a_listener_that_drips_its_answer_is_given_up_on_at_one_deadline(
    make_settings: MakeSettings, runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A byte at a time, each well within the per-read wait: the knock still ends."""
    from clawhq.cli import doctor

    monkeypatch.setattr(doctor, "PROBE_SECONDS", 0.5)
    stop = threading.Event()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def drip() -> None:
        with contextlib.suppress(OSError):
            conn, _ = server.accept()
            with conn:
                while not stop.wait(0.05):
                    conn.sendall(b"x")

    threading.Thread(target=drip, daemon=True).start()
    set_plan(make_settings, egress_policy="allowlist")
    try:
        port = int(server.getsockname()[1])
        found = check(make_settings, runtime, "egress proxy", env="production", **_ports(port))
    finally:
        stop.set()
        server.close()
    assert not found.ok and "not ClawHQ's proxy" in found.detail


def test_production_needs_agent_origins_its_users_browsers_reach(
    make_settings: MakeSettings, fake_runtime: FakeRuntime
) -> None:
    dev = check(make_settings, fake_runtime, "agent origin")
    assert dev.ok and "only a browser on this machine" in dev.detail
    key = "A" * 43 + "="
    production = check(
        make_settings, fake_runtime, "agent origin", env="production", encryption_key=key
    )
    assert not production.ok and "CLAWHQ_AGENT_ORIGIN" in production.detail
    chosen = check(
        make_settings,
        fake_runtime,
        "agent origin",
        env="production",
        encryption_key=key,
        agent_origin="https://{agent}.agents.example.com",
    )
    assert chosen.ok and "https://{agent}.agents.example.com" in chosen.detail
