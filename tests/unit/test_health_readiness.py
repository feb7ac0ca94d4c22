"""``GET /health`` says whether capped workspace disks can be made (``disks``) and whether the
egress proxy listens (``egressProxy``); in production either failing where it is needed is
unhealthy (503), the way deploys fail closed (docs/disks.md, docs/egress.md)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from clawhq.db.models import Plan
from clawhq.egress import service
from clawhq.errors import EngineError
from clawhq.settings import Settings
from tests.conftest import TEST_IMAGE, Api, running_app
from tests.doubles.runtime import FakeRuntime
from tests.standins.gateway import free_port as standin_free_port

NO_LOOP = "the host has no loop devices (/dev/loop-control is missing)"


class LoopbackRuntime(FakeRuntime):
    """The fake engine whose networks' gateway is loopback: the egress proxy really listens."""

    def ensure_network(self, name: str) -> str:
        super().ensure_network(name)
        return "127.0.0.1"


@pytest.fixture
def runtime() -> LoopbackRuntime:
    return LoopbackRuntime(images={TEST_IMAGE})


@pytest.fixture
def free_port() -> int:
    return standin_free_port()


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port something else listens on: the proxy cannot."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.fixture
def start(
    make_settings: Callable[..., Settings], runtime: LoopbackRuntime, free_port: int
) -> Callable[..., Any]:
    """An app over the loopback runtime: ``start(env=…, **settings)``. The firewall is off so
    that only the disks and the proxy decide; the proxy gets a free port unless told."""

    def make(**overrides: Any) -> Any:
        values: dict[str, Any] = {"firewall": "off", "supervise": False}
        values["egress_proxy_port"] = free_port
        values.update(overrides)
        return running_app(make_settings(**values), runtime, probe=lambda url: True)

    return make


def set_plan(api: Api, name: str = "pro", **fields: Any) -> None:
    with api.context.sessions.begin() as session:
        plan = session.get(Plan, name)
        assert plan is not None
        for key, value in fields.items():
            setattr(plan, key, value)


def health(api: Api) -> tuple[int, dict[str, Any]]:
    reply = api.client.get("/health")
    return reply.status_code, reply.json()


# -- disks -------------------------------------------------------------------------------------


@pytest.mark.parametrize("env", ["development", "production"])
def test_disks_ok_when_the_host_can_make_them(start: Callable[..., Any], env: str) -> None:
    with start(env=env) as api:
        status, body = health(api)
    assert (status, body["ok"], body["disks"]) == (200, True, "ok")


@pytest.mark.parametrize("env", ["development", "production"])
def test_disks_off_when_no_cap_is_configured(
    start: Callable[..., Any], runtime: LoopbackRuntime, env: str
) -> None:
    runtime.disk_problem = NO_LOOP  # nothing asks for a cap, so the host's limits do not matter
    with start(env=env, agent_disk="off") as api:
        status, body = health(api)
    assert (status, body["ok"], body["disks"]) == (200, True, "off")


def test_disks_unavailable_are_reported_outside_production(
    start: Callable[..., Any], runtime: LoopbackRuntime
) -> None:
    runtime.disk_problem = NO_LOOP
    with start() as api:
        status, body = health(api)
    assert (status, body["ok"]) == (200, True)
    assert body["disks"] == f"unavailable: {NO_LOOP}"


def test_disks_unavailable_make_production_unhealthy(
    start: Callable[..., Any], runtime: LoopbackRuntime
) -> None:
    runtime.disk_problem = NO_LOOP
    with start(env="production") as api:
        status, body = health(api)
        assert (status, body["ok"]) == (503, False)
        assert body["disks"] == f"unavailable: {NO_LOOP}"
        # Nothing else is wrong: CLAWHQ_FIREWALL=off lets agents start without the rules.
        assert body["database"] == body["engine"] == "ok" and body["firewall"] == "unknown"
        runtime.disk_problem = None  # the operator fixed the host: healthy again at once
        assert health(api)[0] == 200


def test_a_plans_size_is_a_cap_even_when_the_setting_is_off(
    start: Callable[..., Any], runtime: LoopbackRuntime
) -> None:
    runtime.disk_problem = NO_LOOP
    with start(env="production", agent_disk="off") as api:
        assert health(api)[1]["disks"] == "off"
        set_plan(api, "team", agent_disk=4 * 1024**3)
        status, body = health(api)
    assert (status, body["ok"], body["disks"]) == (503, False, f"unavailable: {NO_LOOP}")


# -- egress proxy ------------------------------------------------------------------------------


@pytest.mark.parametrize("env", ["development", "production"])
def test_a_listening_proxy_is_healthy_with_an_allowlist_plan(
    start: Callable[..., Any], free_port: int, env: str
) -> None:
    with start(env=env) as api:
        set_plan(api, egress_policy="allowlist")
        status, body = health(api)
        assert (status, body["ok"], body["egressProxy"]) == (200, True, "listening")
        with socket.create_connection(("127.0.0.1", free_port), timeout=2):
            pass  # and it really listens there


def test_a_proxy_that_cannot_listen_is_reported_without_its_address(
    start: Callable[..., Any], taken_port: int
) -> None:
    with start(egress_proxy_port=taken_port) as api:
        set_plan(api, egress_policy="allowlist")
        status, body = health(api)
    assert (status, body["ok"]) == (200, True)  # development: reported only
    assert body["egressProxy"].startswith(f"not listening: cannot listen on port {taken_port}")
    assert "in use" in body["egressProxy"] and "127.0.0.1" not in body["egressProxy"]


def test_production_is_unhealthy_without_the_proxy_only_when_a_plan_needs_it(
    start: Callable[..., Any], taken_port: int
) -> None:
    with start(env="production", egress_proxy_port=taken_port) as api:
        status, body = health(api)
        assert body["egressProxy"].startswith("not listening:")
        assert (status, body["ok"]) == (200, True)  # every plan is open: nobody needs it
        set_plan(api, egress_policy="none")
        assert health(api)[0] == 200  # `none` agents reach ClawHQ only, never the proxy
        set_plan(api, egress_policy="allowlist")
        status, body = health(api)
        assert (status, body["ok"]) == (503, False)
        assert body["disks"] == "ok" and body["database"] == body["engine"] == "ok"


def test_a_proxy_nobody_started_counts_as_not_listening_in_production(
    start: Callable[..., Any],
) -> None:
    with start(env="production") as api:
        set_plan(api, egress_policy="allowlist")
        assert health(api)[0] == 200
        api.context.host.report_egress_proxy("unknown")  # as in a process that never started it
        status, body = health(api)
    assert (status, body["ok"], body["egressProxy"]) == (503, False, "unknown")


def wait_for_proxy(api: Api) -> dict[str, Any]:
    """Poll ``/health`` until the proxy listens (bounded: fails with the last body)."""
    body: dict[str, Any] = {}
    for _ in range(400):
        body = health(api)[1]
        if body["egressProxy"] == "listening":
            return body
        time.sleep(0.025)
    raise AssertionError(f"the egress proxy never came up: {body}")


def test_an_engine_away_at_start_delays_the_proxy_until_it_answers(
    start: Callable[..., Any], runtime: LoopbackRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "RETRY_SECONDS", 0.02)
    runtime.fail["ensure_network"] = EngineError("engine away", code="engine_unavailable")
    with start() as api:
        body = health(api)[1]
        assert body["egressProxy"].startswith("not listening: the egress network's gateway")
        del runtime.fail["ensure_network"]
        api.context.networks.prepare()  # what the controller does once the engine answers
        wait_for_proxy(api)


def test_a_taken_port_is_tried_again_until_the_proxy_listens(
    start: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "RETRY_SECONDS", 0.02)
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = int(holder.getsockname()[1])
    with start(egress_proxy_port=port) as api:
        assert health(api)[1]["egressProxy"].startswith("not listening: cannot listen")
        holder.close()
        wait_for_proxy(api)
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # ClawHQ's proxy is what listens there now
