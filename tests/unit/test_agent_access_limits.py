"""The proxy's limits under a real server (uvicorn, as `clawhq serve` runs it) and a stand-in
gateway: an oversized WebSocket message either way, and a client that never reads."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from clawhq.api.app import create_app
from clawhq.context import build_context
from clawhq.settings import Settings
from tests.conftest import TEST_IMAGE
from tests.doubles.runtime import FakeRuntime
from tests.standins.gateway import free_port, serving

LIMIT = 64 * 1024


class Served:
    def __init__(self, base: str, runtime: FakeRuntime) -> None:
        self.base = base
        self.runtime = runtime
        self.http = httpx.Client(base_url=base, timeout=10)

    def user(self) -> dict[str, str]:
        email = f"l{time.monotonic_ns()}@example.com"
        reply = self.http.post(
            "/api/auth/register", json={"email": email, "password": "correct horse battery"}
        )
        assert reply.status_code == 201, reply.text
        return {"Authorization": f"Bearer {reply.json()['token']}"}

    def running_agent(self, headers: dict[str, str]) -> str:
        reply = self.http.post(
            "/api/agents", json={"name": "a", "apiKey": "sk-test-0123456789"}, headers=headers
        )
        agent_id = str(reply.json()["id"])
        assert self.http.post(f"/api/agents/{agent_id}/deploy", headers=headers).status_code == 202
        for _ in range(200):
            if self.http.get(f"/api/agents/{agent_id}", headers=headers).json()["status"] == (
                "RUNNING"
            ):
                return agent_id
            time.sleep(0.02)
        raise AssertionError("agent did not come up")

    def on_agent(self, agent_id: str) -> dict[str, str]:
        """The Host header of the agent's own origin (where its pages are served)."""
        return {"Host": f"{agent_id}.agents.localhost:8000"}

    def address(self, agent_id: str) -> str:
        return next(c.address for c in self.runtime.containers.values() if c.agent_id == agent_id)


@pytest.fixture
def served(make_settings: Callable[..., Settings]) -> Iterator[tuple[Served, int]]:
    gateway_port, port = free_port(), free_port()
    settings = make_settings(
        supervise=False,
        agent_internal_port=gateway_port,
        proxy_idle_seconds=1,
        proxy_max_message=LIMIT,
        proxy_connections_per_user=1,
        port=port,
    )
    runtime = FakeRuntime(images={TEST_IMAGE})
    context = build_context(settings, runtime=runtime, probe=lambda url: True)
    with ExitStack() as stack:
        stack.enter_context(
            serving("127.0.0.1", port, create_app(lambda: context), ws_max_size=LIMIT)
        )
        yield Served(f"http://127.0.0.1:{port}", runtime), gateway_port


def test_oversized_websocket_messages_close_the_pair_with_1009(served: tuple[Served, int]) -> None:
    clawhq, gateway_port = served
    headers = clawhq.user()
    agent_id = clawhq.running_agent(headers)
    port = int(clawhq.base.rsplit(":", 1)[1])
    url = f"ws://{agent_id}.agents.localhost:8000/agents/{agent_id}/ws"

    async def exchange(send: str) -> int:
        # The agent's own origin, reached at ClawHQ's loopback address.
        async with connect(
            url, additional_headers=headers, max_size=None, host="127.0.0.1", port=port
        ) as ws:
            await ws.recv()  # the stand-in's greeting
            await ws.send(send)
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            except ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd else -1  # -1: closed without a frame

    def when_free(send: str) -> int:
        # The owner's one slot comes back once the proxy has closed both sides of a pair.
        deadline = time.monotonic() + 10
        while True:
            try:
                return asyncio.run(exchange(send))
            except InvalidStatus as refused:
                if refused.response.status_code != 429 or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    with serving(clawhq.address(agent_id), gateway_port):
        assert when_free("z" * (LIMIT + 1)) == 1009  # browser -> gateway
        assert when_free(f"big:{LIMIT + 1}") == 1009  # gateway -> browser


def test_a_client_that_never_reads_is_shed_and_others_are_unaffected(
    served: tuple[Served, int],
) -> None:
    clawhq, gateway_port = served
    mine, theirs = clawhq.user(), clawhq.user()
    stalled_agent, other_agent = clawhq.running_agent(mine), clawhq.running_agent(theirs)
    with (
        serving(clawhq.address(stalled_agent), gateway_port),
        serving(clawhq.address(other_agent), gateway_port),
    ):
        port = int(clawhq.base.rsplit(":", 1)[1])
        stalled = socket.create_connection(("127.0.0.1", port))
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.sendall(
            f"GET /agents/{stalled_agent}/big HTTP/1.1\r\n"
            f"Host: {stalled_agent}.agents.localhost:8000\r\n"
            f"Authorization: {mine['Authorization']}\r\n\r\n".encode()
        )
        try:
            time.sleep(0.5)  # the response is under way, and stuck
            other = clawhq.http.get(
                f"/agents/{other_agent}/page", headers={**theirs, **clawhq.on_agent(other_agent)}
            )
            assert other.status_code == 200  # another user is not held up
            mine = {**mine, **clawhq.on_agent(stalled_agent)}
            busy = clawhq.http.get(f"/agents/{stalled_agent}/page", headers=mine)
            assert busy.status_code == 429  # the stalled response holds the owner's one slot
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                again = clawhq.http.get(f"/agents/{stalled_agent}/page", headers=mine)
                if again.status_code == 200:
                    break
                time.sleep(0.2)
            assert again.status_code == 200, again.text  # shed: the slot came back
        finally:
            stalled.close()
