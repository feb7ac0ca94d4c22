"""6-8. The proxy in front of agents: what going through ClawHQ costs against talking to the
gateway directly, same machine, same run.

The gateway is a stand-in (tests/standins/gateway.py) on the in-memory engine's loopback
address for the agent, so the difference measured is ClawHQ's alone: authentication, the
owner and status check, the hop, the relay. A real OpenClaw gateway behind it only adds its own
time to both sides.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from websockets.asyncio.client import connect

from bench.harness import Database, Server, free_port, median, percentile, wait_until, workdir
from bench.streams import open_streams

Row = dict[str, object]
CHAT = {"model": "openclaw", "messages": [{"role": "user", "content": "hi"}]}


class Setup:
    def __init__(self, server: Server, agent_id: str, headers: dict[str, str], direct: str):
        self.server = server
        self.agent_id = agent_id
        self.headers = headers
        self.direct = direct  # the stand-in gateway's own base URL
        self.proxied = f"{server.base}/api/agents/{agent_id}"
        # The agent's pages are on its own origin (http://{id}.agents.localhost:PORT), which
        # resolves nowhere here: requests go to ClawHQ's address with that origin's Host.
        self.agent_host = f"{agent_id}.agents.localhost:{server.port}"
        self.pages = f"{server.base}/agents/{agent_id}"
        self.page_headers = {**headers, "Host": self.agent_host}


@contextlib.contextmanager
def proxied_agent(quick: bool) -> Iterator[Setup]:
    """ClawHQ (in-memory engine) with one RUNNING agent and a stand-in gateway at its address."""
    gateway_port = free_port()
    with (
        workdir() as tmp,
        Database.create("sqlite", Path(tmp)) as db,
        Server(
            db,
            Path(tmp),
            agent_internal_port=str(gateway_port),
            proxy_connections_per_user="1000",
            proxy_connections_total="1000",
            log_format="text",
            env={"BENCH_FAKE_ENGINE": "1"},
        ) as server,
    ):
        _, headers = server.user()
        agent_id = server.agent(headers)
        server.client.post(f"/api/agents/{agent_id}/deploy", headers=headers).raise_for_status()
        wait_until(lambda: server.status(agent_id, headers)["status"] == "RUNNING", 30, "RUNNING")
        address = server.client.get(f"/bench/address/{agent_id}").json()["address"]
        gateway = subprocess.Popen(
            [sys.executable, "-m", "tests.standins.gateway", address, str(gateway_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        direct = f"http://{address}:{gateway_port}"
        try:
            probe = httpx.Client()

            def up() -> bool:
                try:
                    return probe.get(f"{direct}/healthz").status_code == 200
                except httpx.TransportError:
                    return False

            wait_until(up, 30, "the stand-in gateway", every=0.05)
            yield Setup(server, agent_id, headers, direct)
        finally:
            gateway.terminate()
            gateway.wait(timeout=10)


def _chat_once(client: httpx.Client, url: str, headers: dict[str, str]) -> tuple[float, float]:
    started = time.perf_counter()
    with client.stream("POST", url, json={**CHAT, "stream": True}, headers=headers) as reply:
        first = None
        for _ in reply.iter_raw():
            if first is None:
                first = time.perf_counter() - started
        total = time.perf_counter() - started
    return first or total, total


def chat_completion(quick: bool) -> list[Row]:
    """6. Chat completion (streamed) through ClawHQ vs straight to the gateway: TTFB, total."""
    rounds = 100 if quick else 400
    with proxied_agent(quick) as setup:
        client = httpx.Client(timeout=30)
        direct, proxied = [], []
        for _ in range(20):  # warm both paths (connections, caches)
            _chat_once(client, f"{setup.direct}/v1/chat/completions", {})
            _chat_once(client, f"{setup.proxied}/v1/chat/completions", setup.headers)
        for _ in range(rounds):  # interleaved, so drift on the machine hits both alike
            direct.append(_chat_once(client, f"{setup.direct}/v1/chat/completions", {}))
            proxied.append(
                _chat_once(client, f"{setup.proxied}/v1/chat/completions", setup.headers)
            )
    rows = []
    for index, what in ((0, "time to first byte"), (1, "total")):
        mine = median([p[index] for p in proxied])
        bare = median([d[index] for d in direct])
        rows.append(
            {
                "benchmark": f"chat completion, {what} (p50)",
                "clawhq": f"{mine * 1000:.2f} ms",
                "raw docker": f"{bare * 1000:.2f} ms direct",
                "ratio": round(mine / bare, 2),
                "target": f"<= 1.10 or +5 ms (+{(mine - bare) * 1000:.2f} ms)",
                "n": rounds,
            }
        )
    return rows


async def _round_trips(
    url: str, headers: dict[str, str], count: int, to: tuple[str, int] | None = None
) -> list[float]:
    where = {"host": to[0], "port": to[1]} if to else {}
    async with connect(url, additional_headers=headers, compression=None, **where) as ws:
        await ws.recv()  # the stand-in's greeting
        times = []
        for n in range(count):
            started = time.perf_counter()
            await ws.send(f"ping {n}")
            await ws.recv()
            times.append(time.perf_counter() - started)
        return times


def websocket_round_trip(quick: bool) -> list[Row]:
    """7. WebSocket round trip through the proxy vs direct."""
    count = 500 if quick else 3000
    with proxied_agent(quick) as setup:
        path = f"/agents/{setup.agent_id}/ws"
        direct = asyncio.run(_round_trips(setup.direct.replace("http", "ws") + path, {}, count))
        proxied_url = f"ws://{setup.agent_host}{path}"
        to = ("127.0.0.1", setup.server.port)
        proxied = asyncio.run(_round_trips(proxied_url, setup.headers, count, to))
    mine, bare = median(proxied), median(direct)
    return [
        {
            "benchmark": "WebSocket round trip (p50)",
            "clawhq": f"{mine * 1e6:.0f} µs",
            "raw docker": f"{bare * 1e6:.0f} µs direct",
            "ratio": round(mine / bare, 2),
            "target": "<= 1.2",
            "n": count,
        }
    ]


def _event_sent_at(line: str) -> float | None:
    """The stand-in gateway's ticks are Server-Sent Events whose data is their send time."""
    return float(line[6:]) if line.startswith("data: ") else None


async def _streams(
    url: str, headers: dict[str, str], count: int, events: int
) -> tuple[float, list[float]]:
    """``count`` tick streams at once, one every 0.1 s."""
    query = {"n": str(events), "every": "0.1"}
    request = {"method": "GET", "url": url, "params": query, "headers": headers}
    return await open_streams(request, count, events, _event_sent_at)


def concurrent_streams(quick: bool) -> list[Row]:
    """8. 200 concurrent proxied streams (Server-Sent Events), event delay vs direct."""
    count, events = (200, 20) if quick else (200, 50)
    with proxied_agent(quick) as setup:
        d_open, direct = asyncio.run(_streams(f"{setup.direct}/agents/x/ticks", {}, count, events))
        p_open, proxied = asyncio.run(
            _streams(f"{setup.pages}/ticks", setup.page_headers, count, events)
        )
    return [
        {
            "benchmark": f"{count} concurrent streams: all open",
            "clawhq": f"{p_open * 1000:.0f} ms",
            "raw docker": f"{d_open * 1000:.0f} ms direct",
            "ratio": round(p_open / d_open, 2),
            "target": "all complete",
            "n": count,
        },
        {
            "benchmark": f"{count} concurrent streams: event delay p50 / p99",
            "clawhq": f"{median(proxied) * 1000:.1f} / {percentile(proxied, 0.99) * 1000:.1f} ms",
            "raw docker": f"{median(direct) * 1000:.1f} / {percentile(direct, 0.99) * 1000:.1f} ms",
            "ratio": round(percentile(proxied, 0.99) / max(percentile(direct, 0.99), 1e-4), 2),
            "target": "p99 < 100 ms",
            "n": len(proxied),
        },
    ]
