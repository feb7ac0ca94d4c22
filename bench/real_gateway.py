"""9. The real OpenClaw gateway behind ClawHQ: a chat turn and a WebSocket RPC through the
proxy vs straight to the gateway (the container's address, with the identity the proxy would
send), same agent, same run. The model is a stand-in on the agent network's gateway."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import docker
import httpx

from bench.harness import NETWORK, Database, Server, median, wait_until, workdir
from clawhq.cli.images import build_openclaw
from clawhq.runtime.docker_engine import DockerRuntime
from tests.integration.control_ui import control_ui_connect
from tests.standins.model import serving_model

Row = dict[str, object]
IMAGE = "clawhq-openclaw:test"  # what the suite builds (cached: nothing to do)
CHAT = {"model": "openclaw", "user": "bench", "messages": [{"role": "user", "content": "Hi"}]}


def _gateway(agent_id: str) -> tuple[str, dict[str, str]]:
    """The gateway's own address and the headers ClawHQ's proxy sends it."""
    client = docker.from_env(version="1.41")
    (container,) = client.containers.list(filters={"label": f"clawhq.agent-id={agent_id}"})
    env = dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])
    address = container.attrs["NetworkSettings"]["Networks"][NETWORK]["IPAddress"]
    headers = {"X-ClawHQ-Identity": env["CLAWHQ_PROXY_IDENTITY"], "X-Forwarded-For": "192.0.2.1"}
    return f"http://{address}:18789", headers


def _rpc_round_trips(url: str, headers: dict[str, str], count: int) -> list[float]:
    deadline = time.monotonic() + 90
    while True:  # RUNNING comes a moment before the gateway takes WebSocket connections
        hello, results = asyncio.run(control_ui_connect(url, headers, ("health",) * count))
        if hello["ok"] or not hello["error"].get("retryable") or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert hello["ok"], hello
    assert all(r["ok"] for r in results), results[:1]
    return [float(r["seconds"]) for r in results]


def real_gateway(quick: bool) -> list[Row]:
    """9. Real OpenClaw gateway: chat turn and WebSocket RPC, through ClawHQ vs direct."""
    turns, rpcs = (5, 100) if quick else (20, 500)
    runtime = DockerRuntime(None)
    build_openclaw(runtime, IMAGE)
    gateway_ip = runtime.ensure_network(NETWORK)
    with (
        workdir() as tmp,
        Database.create("sqlite", Path(tmp)) as db,
        serving_model(gateway_ip) as model,
        Server(
            db,
            Path(tmp),
            agent_image=IMAGE,
            agent_memory="2g",
            start_timeout="240",
            agent_publish_ports="false",
            llm_upstream_deepseek=model,
        ) as server,
    ):
        _, headers = server.user()
        body = {
            "name": "real",
            "modelProvider": "deepseek",
            "model": "deepseek-chat",
            "apiKey": "sk-bench-000000",
        }
        agent_id = server.client.post("/api/agents", json=body, headers=headers).json()["id"]
        server.client.post(f"/api/agents/{agent_id}/deploy", headers=headers).raise_for_status()
        wait_until(lambda: server.status(agent_id, headers)["status"] == "RUNNING", 240, "up")
        direct, identity = _gateway(agent_id)
        client = httpx.Client(timeout=180)
        proxied_chat = f"{server.base}/api/agents/{agent_id}/v1/chat/completions"
        chats: dict[str, list[float]] = {"direct": [], "clawhq": []}
        client.post(f"{direct}/v1/chat/completions", json=CHAT, headers=identity)  # first turn
        for _ in range(turns):
            for side, url, sent in (
                ("direct", f"{direct}/v1/chat/completions", identity),
                ("clawhq", proxied_chat, headers),
            ):
                started = time.perf_counter()
                client.post(url, json=CHAT, headers=sent).raise_for_status()
                chats[side].append(time.perf_counter() - started)
        path = f"/agents/{agent_id}"
        ws_direct = _rpc_round_trips(
            direct.replace("http", "ws") + path, {**identity, "Origin": server.base}, rpcs
        )
        ws_proxied = _rpc_round_trips(
            server.base.replace("http", "ws") + path, {**headers, "Origin": server.base}, rpcs
        )
        server.client.delete(f"/api/agents/{agent_id}?keepWorkspace=false", headers=headers)
    chat_c, chat_d = median(chats["clawhq"]), median(chats["direct"])
    ws_c, ws_d = median(ws_proxied), median(ws_direct)
    return [
        {
            "benchmark": "real gateway: chat turn (p50)",
            "clawhq": f"{chat_c * 1000:.0f} ms",
            "raw docker": f"{chat_d * 1000:.0f} ms direct",
            "ratio": round(chat_c / chat_d, 2),
            "target": f"<= 1.10 or +5 ms (+{(chat_c - chat_d) * 1000:.1f} ms)",
            "n": turns,
        },
        {
            "benchmark": "real gateway: WebSocket RPC round trip (p50)",
            "clawhq": f"{ws_c * 1e6:.0f} µs",
            "raw docker": f"{ws_d * 1e6:.0f} µs direct",
            "ratio": round(ws_c / ws_d, 2),
            "target": "<= 1.2",
            "n": rpcs,
        },
    ]
