"""The real OpenClaw image under an egress proxy (``CLAWHQ_EGRESS_PROXY``): the gateway boots,
its outbound HTTP goes through the proxy with ``Proxy-Authorization: Basic agent:<LLM token>``,
and ClawHQ itself (the LLM gateway) is reached directly, through the entrypoint's loopback
relay, never through the proxy.

Nothing leaves the machine: the container is on an *internal* bridge network (it reaches the
host's addresses on the network and nothing else), and the proxy, a few lines of asyncio on the
network's gateway address, records what it is asked and forwards nothing: it answers every
``CONNECT`` and absolute-URI request itself with a 403. The outbound traffic is Telegram's: with
the channel listed, the gateway asks ``api.telegram.org`` for its bot at start.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.integration.helpers import exec_in, run_container, scratch_bridge, sdk, wait_for
from tests.integration.test_openclaw_image import HARDENING, agent_env, proxy_headers
from tests.integration.test_openclaw_llm_paths import ANSWER, Recorder, recorder_handler

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]

TOKEN = "chqllm_" + "Eg0-_" * 8 + "xyz"  # the agent's ClawHQ LLM token: the proxy password
BOT_TOKEN = "123456:telegram-fake-token-0123456789"
BASIC = "Basic " + base64.b64encode(f"agent:{TOKEN}".encode()).decode()
CONFIG = "/home/openclaw/.openclaw/openclaw.json"
# Every process's pid, command line and environment (one variable a line), as the agent's uid
# sees them: a process it cannot read (the entrypoint's stage two, exec'd from a binary the
# uid cannot read) shows no environment.
ENVIRONS = (
    "for p in /proc/[0-9]*; do echo; n=${p#/proc/}; "
    # not this listing itself (docker exec gives it the container's env), nor its children
    "[ $n = $$ ] || [ \"$(cut -d' ' -f4 $p/stat 2>/dev/null)\" = $$ ] && continue; "
    "echo \"== $n $(tr '\\0' ' ' < $p/cmdline 2>/dev/null)\"; "
    "tr '\\0' '\\n' < $p/environ 2>/dev/null; echo; done"
)


@dataclass
class ForwardProxy:
    """An HTTP forward proxy that records each request (method, target, Proxy-Authorization)
    and forwards none: CONNECT and absolute-URI requests alike are answered 403."""

    requests: list[dict[str, str]] = field(default_factory=list)
    address: str = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            line, *lines = head.decode("latin-1").split("\r\n")
            method, target, _ = line.split(" ", 2)
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (h.partition(":") for h in lines if h)
            }
            auth = headers.get("proxy-authorization", "")
            self.requests.append({"method": method, "target": target, "auth": auth})
            body = b"refused by the test's proxy"
            writer.write(
                b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ValueError, OSError):
            pass
        finally:
            writer.close()


@contextlib.contextmanager
def serving_proxy(host: str) -> Iterator[ForwardProxy]:
    proxy = ForwardProxy()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    server: list[asyncio.Server] = []

    async def start() -> None:
        server.append(await asyncio.start_server(proxy.handle, host, 0))
        host_, port = server[0].sockets[0].getsockname()[:2]
        proxy.address = f"{host_}:{port}"
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    started.wait(10)
    try:
        yield proxy
    finally:
        server[0].close()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@pytest.fixture(scope="module")
def internal_bridge() -> Iterator[tuple[str, str]]:
    with scratch_bridge("clawhq-test-egress", "openclaw-image", internal=True) as found:
        yield found


@pytest.fixture(scope="module")
def clawhq(internal_bridge: tuple[str, str]) -> Iterator[Recorder]:
    """ClawHQ as the agent reaches it: the LLM gateway (and the webhooks), one host:port."""
    found = Recorder()
    server = ThreadingHTTPServer((internal_bridge[1], 0), recorder_handler(found))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    found.url = f"http://{internal_bridge[1]}:{server.server_address[1]}"
    try:
        yield found
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def proxy(internal_bridge: tuple[str, str]) -> Iterator[ForwardProxy]:
    with serving_proxy(internal_bridge[1]) as found:
        yield found


@dataclass
class Agent:
    container: Any
    url: str


@pytest.fixture(scope="module")
def agent(
    openclaw_image: str,
    internal_bridge: tuple[str, str],
    clawhq: Recorder,
    proxy: ForwardProxy,
) -> Iterator[Agent]:
    network, gateway_address = internal_bridge
    volume = sdk().volumes.create(f"clawhq-test-egress-{uuid.uuid4().hex[:10]}").name
    env = agent_env(
        CLAWHQ_MODEL_PROVIDER="deepseek",  # <base>/chat/completions, what the recorder answers
        CLAWHQ_MODEL="deepseek-chat",
        CLAWHQ_API_KEY=TOKEN,
        CLAWHQ_PROXY_ADDRESSES=gateway_address,
        CLAWHQ_LLM_BASE_URL=f"{clawhq.url}/llm/deepseek",
        CLAWHQ_WEBHOOK_URL=f"{clawhq.url}/hooks/agent",
        CLAWHQ_WEBHOOK_TOKEN="whk-egress-test",
        CLAWHQ_HEARTBEAT_INTERVAL="2",
        CLAWHQ_USAGE_INTERVAL="0",
        CLAWHQ_CHANNELS='["telegram"]',
        TELEGRAM_BOT_TOKEN=BOT_TOKEN,
        CLAWHQ_EGRESS_PROXY=f"http://{proxy.address}",
    )
    container = run_container(
        openclaw_image,
        environment=env,
        hostname="agent-egress-test",
        volumes={volume: {"bind": "/home/openclaw", "mode": "rw"}},
        labels={"clawhq.test": "openclaw-image"},
        # An agent turn needs more than ClawHQ's 1 GiB default (see test_openclaw_image).
        **{**HARDENING, "network_mode": network, "mem_limit": "2g"},
    )
    try:
        container.reload()
        ip = container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]
        yield Agent(container, f"http://{ip}:18789")
    finally:
        container.remove(force=True)
        sdk().volumes.get(volume).remove(force=True)


def wait_ready(agent: Agent, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            reply = httpx.get(
                f"{agent.url}/readyz", headers={"X-Forwarded-For": "192.0.2.10"}, timeout=5
            )
            if reply.status_code == 200 and reply.json().get("ready") is True:
                return
        except (httpx.HTTPError, ValueError):
            pass
        agent.container.reload()
        if agent.container.status == "exited":
            break
        time.sleep(1)
    raise AssertionError(agent.container.logs().decode(errors="replace")[-4000:])


def test_gateway_boots_and_its_egress_goes_through_the_proxy_with_the_agents_token(
    agent: Agent, proxy: ForwardProxy
) -> None:
    wait_ready(agent)
    assert httpx.get(f"{agent.url}/healthz").json() == {"ok": True, "status": "live"}
    logs = agent.container.logs().decode(errors="replace")
    assert "routing process HTTP traffic through external proxy" in logs, logs[-3000:]

    # Telegram's Bot API (https): a CONNECT to api.telegram.org:443, with the credentials.
    telegram = wait_for(
        lambda: [r for r in proxy.requests if r["target"] == "api.telegram.org:443"],
        timeout=120,
        what=f"a CONNECT to api.telegram.org through the proxy (seen: {proxy.requests})",
    )
    assert telegram[0]["method"] == "CONNECT"
    # Every request the proxy saw carried the agent's credentials, and none was for ClawHQ
    # (reached directly) or loopback (direct in OpenClaw's gateway-only mode).
    assert proxy.requests and all(r["auth"] == BASIC for r in proxy.requests), proxy.requests
    clawhq_host = proxy.address.rsplit(":", 1)[0]
    for request in proxy.requests:
        assert clawhq_host not in request["target"], proxy.requests
        assert "127.0.0.1" not in request["target"] and "localhost" not in request["target"]


def test_clawhq_is_reached_directly_and_the_token_stays_off_the_volume(
    agent: Agent, proxy: ForwardProxy, clawhq: Recorder
) -> None:
    wait_ready(agent)
    reply = httpx.post(
        f"{agent.url}/v1/chat/completions",
        headers=proxy_headers(),
        json={"model": "openclaw", "user": "t1", "messages": [{"role": "user", "content": "Hi"}]},
        timeout=300,
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"] == ANSWER
    # The model call reached ClawHQ's LLM gateway with the token as the provider key, through
    # the relay (not the proxy); the reporter's heartbeats too.
    calls = clawhq.under("/llm/deepseek/")
    assert calls and all(c["path"] == "/llm/deepseek/chat/completions" for c in calls), calls
    assert all(c["headers"]["authorization"] == f"Bearer {TOKEN}" for c in calls)
    wait_for(lambda: clawhq.under("/hooks/agent"), timeout=30, what="a heartbeat at ClawHQ")
    assert not [r for r in proxy.requests if "/llm/" in r["target"] or "/hooks/" in r["target"]]

    # The config names the key's variable, never the token; nothing on the volume holds it.
    code, config = exec_in(agent.container.id, "cat", CONFIG)
    assert code == 0 and f"http://agent:${{DEEPSEEK_API_KEY}}@{proxy.address}" in config, config
    code, found = exec_in(agent.container.id, "grep", "-rl", TOKEN, "/home/openclaw")
    assert code == 1, found

    # Which processes hold the token in their environment (/proc/<pid>/environ, readable by
    # the agent's tools). The inits (docker's and tini) hold the container's env, so
    # CLAWHQ_API_KEY, unless ClawHQ passes it in CLAWHQ_SECRETS_FILE (docs/openclaw-image.md);
    # the rest are
    # OpenClaw's: the gateway (the provider key) and its workers (the provider key, and the
    # proxy URL with its credentials, which OpenClaw exports to its children once the managed
    # proxy is on). Never the entrypoint's second stage (the relay, the reporter).
    code, listing = exec_in(agent.container.id, "bash", "-c", ENVIRONS)
    holders: dict[str, list[str]] = {}
    for block in listing.split("\n== ")[1:]:
        first, *variables = block.splitlines()
        names = sorted(v.split("=", 1)[0] for v in variables if TOKEN in v)
        if names:
            holders[first.strip()] = names
    print("processes holding the token in their environment:", holders)
    inits = [c for c in holders if c.split(" ")[1] in ("/sbin/docker-init", "/usr/bin/tini")]
    assert inits and all(holders.pop(c) == ["CLAWHQ_API_KEY"] for c in inits), holders
    gateway = [names for command, names in holders.items() if " openclaw-gateway" in command]
    assert gateway == [["DEEPSEEK_API_KEY"]], holders
    proxy_env = {"HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"}
    for command, names in holders.items():
        assert "--stage2" not in command, holders
        assert set(names) <= {"DEEPSEEK_API_KEY"} | proxy_env, holders
