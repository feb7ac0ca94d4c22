"""A user reaches their real OpenClaw agent through ClawHQ, as the README says: `clawhq serve`,
log in, deploy, open the Control UI (a real browser), chat — with no host port and no gateway
token in sight. The model is a stand-in on this machine; nothing leaves it."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from websockets.exceptions import InvalidStatus

from clawhq.controller.spec import SECRET_ENV
from clawhq.credentials import LLM_TOKEN_PREFIX, WEBHOOK_TOKEN_PREFIX, hash_token
from clawhq.crypto import Keyring, Sealed, generate_key
from clawhq.db.engine import create_db_engine
from clawhq.db.models import proxy_identity_context
from clawhq.setting_values import decode_encryption_key
from tests.conftest import TEST_NETWORK, clean_database
from tests.integration.control_ui import control_ui_connect
from tests.integration.helpers import run_container, sdk
from tests.integration.served import Served, cli, serve_env
from tests.integration.test_openclaw_secrets import as_agent, gateway_tree, scan
from tests.standins.model import StandIn, serving_model

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]
OWN_KEY = "sk-own-planted-0123456789"
PLANTED_BUNDLED = "sk-bundled-planted-9876543210"
PASSWORD = "correct horse battery"
#: Where screenshots go (CI keeps the folder when a run fails).
ARTIFACTS = Path(os.environ.get("CLAWHQ_TEST_ARTIFACTS", "test-artifacts"))


@dataclass
class Access:
    served: Served
    http: httpx.Client
    owner: dict[str, str]
    owner_email: str
    agent_id: str

    @property
    def origin(self) -> str:
        return self.served.base

    def user(self) -> tuple[str, dict[str, str]]:
        email = f"a{uuid.uuid4().hex[:12]}@example.com"
        reply = self.http.post("/api/auth/register", json={"email": email, "password": PASSWORD})
        assert reply.status_code == 201, reply.text
        return email, {"Authorization": f"Bearer {reply.json()['token']}"}

    @property
    def agent_origin(self) -> str:
        """The agent's own origin (CLAWHQ_AGENT_ORIGIN's default: *.agents.localhost)."""
        return self.origin_of(self.agent_id)

    def origin_of(self, agent_id: str) -> str:
        port = self.served.base.rsplit(":", 1)[1]
        return f"http://{agent_id}.agents.localhost:{port}"

    def on_agent(self, agent_id: str | None = None) -> dict[str, str]:
        """The Host header of the agent's origin (its name resolves nowhere but in browsers,
        so requests go to ClawHQ's loopback address with it)."""
        return {"Host": self.origin_of(agent_id or self.agent_id).removeprefix("http://")}

    @property
    def loopback(self) -> tuple[str, int]:
        return "127.0.0.1", int(self.served.base.rsplit(":", 1)[1])

    def agent_cookies(self, email: str, agent_id: str | None = None) -> dict[str, str]:
        """Sign in on ClawHQ's origin, follow its hand-off to the agent's own origin, and
        return what a browser then sends there: the Host and the access cookie."""
        agent_id = agent_id or self.agent_id
        cookies = self.browser_cookies(email)
        hop = self.http.get(f"/agents/{agent_id}/", headers=cookies, follow_redirects=False)
        assert hop.status_code == 303, hop.text
        location = hop.headers["location"]
        assert location.startswith(self.origin_of(agent_id) + "/_clawhq/open?code=")
        path = location.removeprefix(self.origin_of(agent_id))
        opened = self.http.get(path, headers=self.on_agent(agent_id), follow_redirects=False)
        assert opened.status_code == 303, opened.text
        ticket = opened.cookies["clawhq_agent_access"]
        self.http.cookies.clear()
        return {**self.on_agent(agent_id), "Cookie": f"clawhq_agent_access={ticket}"}

    def browser_cookies(self, email: str) -> dict[str, str]:
        """Log in as a browser does; the ``Cookie`` header it then sends."""
        login = {"email": email, "password": PASSWORD, "cookie": True}
        reply = self.http.post("/api/auth/login", json=login)
        assert reply.status_code == 200, reply.text
        assert "token" not in reply.json()
        self.http.cookies.clear()
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in reply.cookies.items())}


def wait_running(http: httpx.Client, headers: dict[str, str], agent_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 240
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = http.get(f"/api/agents/{agent_id}", headers=headers).json()
        if body["status"] in ("RUNNING", "ERROR"):
            break
        time.sleep(1)
    assert body["status"] == "RUNNING", body
    return body


@pytest.fixture(scope="module")
def access(
    tmp_path_factory: pytest.TempPathFactory,
    sqlite_url: str,
    docker_runtime: Any,
    openclaw_image: str,
) -> Iterator[Access]:
    """`clawhq serve` with the real image, no host ports, agents' model calls to a stand-in on
    the agent network's gateway; one user with one RUNNING agent."""
    gateway_ip = docker_runtime.ensure_network(TEST_NETWORK)
    tmp = tmp_path_factory.mktemp("access")
    with clean_database(sqlite_url) as url, serving_model(gateway_ip) as model:
        env = serve_env(
            tmp / "data",
            url,
            agent_image=openclaw_image,
            agent_memory="2g",
            start_timeout="240",
            startup_poll_interval="1",
            port_range="19870-19879",
            agent_publish_ports="false",
            # The agent's model calls go through ClawHQ's LLM gateway to the stand-in, with
            # the agent's own key added by ClawHQ; a bundled key is planted to be looked for.
            # DeepSeek: OpenClaw speaks Chat Completions to it, which the stand-in serves (its
            # openai adapter uses the Responses API).
            llm_upstream_deepseek=model,
            deepseek_api_key=PLANTED_BUNDLED,
            encryption_key=generate_key(),
        )
        served = Served(env, tmp / "serve.log").start()
        http = httpx.Client(base_url=served.base, timeout=60)
        try:
            email = f"owner{uuid.uuid4().hex[:8]}@example.com"
            made = cli(env, "users", "create", email, "--password", PASSWORD, "--plan", "pro")
            assert made.returncode == 0, made.stderr
            owner = {"Authorization": f"Bearer {made.stdout.strip().splitlines()[-1]}"}
            body = {
                "name": "reachable",
                "modelProvider": "deepseek",
                "model": "deepseek-chat",
                "apiKey": OWN_KEY,
            }
            agent_id = http.post("/api/agents", json=body, headers=owner).json()["id"]
            assert http.post(f"/api/agents/{agent_id}/deploy", headers=owner).status_code == 202
            wait_running(http, owner, agent_id)
            yield Access(served, http, owner, email, agent_id)
            http.delete(f"/api/agents/{agent_id}?keepWorkspace=false", headers=owner)
        finally:
            http.close()
            served.stop()


def the_container(agent_id: str) -> Any:
    found = sdk().containers.list(filters={"label": f"clawhq.agent-id={agent_id}"})
    assert len(found) == 1
    return found[0]


def test_the_agent_has_no_host_port_no_gateway_token_and_no_provider_key(access: Access) -> None:
    container = the_container(access.agent_id)
    assert container.attrs["HostConfig"]["PortBindings"] in ({}, None)
    env = dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])
    assert "OPENCLAW_GATEWAY_TOKEN" not in env
    assert not SECRET_ENV & set(env)  # ClawHQ's own secrets: see the next test
    # Neither the agent's own key nor the bundled one, anywhere in the container's env or in
    # the environment of any process running in it.
    processes = container.exec_run(
        ["sh", "-c", "cat /proc/[0-9]*/environ | tr '\\0' '\\n'"], user="root"
    )
    assert processes.exit_code == 0 and b"CLAWHQ_" in processes.output
    for planted in (OWN_KEY, PLANTED_BUNDLED):
        assert not [name for name, value in env.items() if planted in value]
        assert planted.encode() not in processes.output
    shown = access.http.get(f"/api/agents/{access.agent_id}", headers=access.owner).text
    identity = current_secrets(access)[2]
    assert len(identity) >= 32 and identity not in shown


def current_secrets(access: Access) -> tuple[str | None, str | None, str]:
    """What ClawHQ holds of the agent's secrets now: the LLM and webhook tokens' digests and
    the proxy identity (sealed: opened with the installation's key)."""
    engine = create_db_engine(access.served.env["DATABASE_URL"])
    try:
        with engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT llm_token_hash, webhook_token_hash, proxy_identity_ciphertext, "
                    "proxy_identity_key_id FROM agents WHERE id = :id"
                ),
                {"id": access.agent_id},
            ).one()
    finally:
        engine.dispose()
    keyring = Keyring(decode_encryption_key(access.served.env["CLAWHQ_ENCRYPTION_KEY"]))
    sealed = Sealed(bytes(row[2]), row[3])
    return row[0], row[1], keyring.open(sealed, proxy_identity_context(access.agent_id))


def assert_no_secret_readable(access: Access, container: Any) -> None:
    """ClawHQ's secrets for the agent's current start are in neither the container's env nor
    any process's environ as the agent's uid reads them; the LLM token only in the gateway's
    processes, as the provider's key (by design: it is the gateway's credential)."""
    llm_hash, webhook_hash, identity = current_secrets(access)
    container.reload()
    env = container.attrs["Config"]["Env"]
    assert not SECRET_ENV & {item.split("=", 1)[0] for item in env}
    tokens = (LLM_TOKEN_PREFIX, WEBHOOK_TOKEN_PREFIX, identity)
    assert not [item for item in env if any(t in item for t in tokens)], env
    assert "CLAWHQ_SECRETS_FILE=/home/openclaw/.clawhq-secrets.json" in env
    processes = scan(container)  # every process of the container, as uid 1001 reads them
    assert any(p["pid"] == 1 and p["environ"] for p in processes)  # docker-init's, readable
    for needle in (WEBHOOK_TOKEN_PREFIX, identity):
        assert not [p["cmdline"] for p in processes if any(needle in v for v in p["environ"])]
    llm = {
        (p["pid"], value) for p in processes for value in p["environ"] if LLM_TOKEN_PREFIX in value
    }
    assert llm and {pid for pid, _ in llm} <= gateway_tree(processes)
    names_values = {value.split("=", 1)[0] for _, value in llm}
    assert names_values == {"DEEPSEEK_API_KEY"}
    (token,) = {value.split("=", 1)[1] for _, value in llm}
    assert hash_token(token) == llm_hash  # the live token, of this start
    assert webhook_hash is not None
    assert as_agent(container, "ls", "/home/openclaw/.clawhq-secrets.json")[0] != 0  # gone


def heartbeat_after(access: Access, since: str | None) -> str:
    """Wait for a heartbeat newer than ``since``: the reporter has the webhook token."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        body = access.http.get(f"/api/agents/{access.agent_id}", headers=access.owner).json()
        seen = body.get("lastHeartbeat")
        if seen and seen != since:
            return str(seen)
        time.sleep(1)
    raise AssertionError(f"no heartbeat after {since}: {body}")


def test_clawhqs_secrets_are_readable_nowhere_in_the_container_across_a_restart(
    access: Access,
) -> None:
    """Issue 13 item 6: the webhook token, the LLM token and the proxy identity come in a file
    ClawHQ writes before each start and the entrypoint removes; nothing of the agent's uid
    reads them from any environ (PID 1 included), and the agent still reports. A supervisor
    restart of the same container hands it new ones the same way."""
    container = the_container(access.agent_id)
    assert container.attrs["HostConfig"]["RestartPolicy"]["Name"] == "no"  # every start ClawHQ's
    first = heartbeat_after(access, None)
    assert_no_secret_readable(access, container)
    before = current_secrets(access)
    container.kill()  # a crash: ClawHQ restarts the same container after its backoff
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        body = access.http.get(f"/api/agents/{access.agent_id}", headers=access.owner).json()
        if body["restartCount"] >= 1 and body["status"] in ("RUNNING", "ERROR"):
            break
        time.sleep(1)
    assert (body["status"], body["restartCount"]) == ("RUNNING", 1), body
    assert body["containerId"] == container.id  # the same container, started again
    heartbeat_after(access, first)
    after = current_secrets(access)
    assert not set(before) & set(after)  # new secrets for the new start
    assert_no_secret_readable(access, container)


def test_the_control_ui_loads_and_its_websocket_connects_as_the_owner(access: Access) -> None:
    cookies = access.agent_cookies(access.owner_email)
    base = f"/agents/{access.agent_id}"
    page = access.http.get(f"{base}/", headers={**cookies, "Accept": "text/html"})
    assert page.status_code == 200, page.text
    assert f'base-path="{base}"' in page.text
    config = access.http.get(f"{base}/__openclaw/control-ui-config.json", headers=cookies)
    assert config.status_code == 200 and config.json()["basePath"] == base
    ws_url = access.agent_origin.replace("http", "ws") + base
    headers = {"Cookie": cookies["Cookie"], "Origin": access.agent_origin}
    deadline = time.monotonic() + 90
    while True:  # live (RUNNING) comes a little before the gateway takes connections
        hello, results = asyncio.run(
            control_ui_connect(ws_url, headers, ("channels.status", "config.get"), access.loopback)
        )
        retry = not hello["ok"] and hello["error"].get("retryable")
        if not retry or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert hello["ok"], hello
    assert hello["payload"]["auth"]["method"] == "trusted-proxy"
    assert "operator.admin" in hello["payload"]["auth"]["scopes"]  # no pairing step
    assert [r["ok"] for r in results] == [True, True], results
    admin = cli(access.served.env, "users", "create", f"adm{uuid.uuid4().hex[:8]}@x.org", "--admin")
    token = admin.stdout.strip().splitlines()[-1]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        audit = access.http.get(
            "/api/admin/audit",
            params={"action": "agent.session_open", "agentId": access.agent_id},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert audit.status_code == 200, audit.text
        if audit.json()["events"]:
            break
        time.sleep(0.2)
    assert audit.json()["events"], "opening a session to the agent is audited"


def test_nobody_else_reaches_the_gateway(access: Access, test_image: str) -> None:
    base = f"/agents/{access.agent_id}"
    other_email, other = access.user()
    here = access.on_agent()
    assert access.http.get(f"{base}/", headers={**other, **here}).status_code == 404
    # Another user signed in on ClawHQ gets no way to the agent's origin.
    cookies = access.browser_cookies(other_email)
    assert access.http.get(f"{base}/", headers=cookies).status_code == 404
    config = access.http.get(
        f"{base}/__openclaw/control-ui-config.json", headers=here, follow_redirects=False
    )
    assert config.status_code == 401  # not signed in (a browser is sent to ClawHQ's origin)
    ws_url = access.agent_origin.replace("http", "ws") + base
    for headers in ({**other, "Origin": access.agent_origin}, {"Origin": access.agent_origin}):
        with pytest.raises(InvalidStatus) as refused:
            asyncio.run(control_ui_connect(ws_url, headers, connect_to=access.loopback))
        assert refused.value.response.status_code in (401, 404)
    # Another agent's container, on the same network, cannot reach the gateway at all.
    address = the_container(access.agent_id).attrs["NetworkSettings"]["Networks"][TEST_NETWORK][
        "IPAddress"
    ]
    neighbour = run_container(
        test_image,
        ["/bin/busybox", "wget", "-q", "-T", "5", "-O", "-", f"http://{address}:18789/healthz"],
        entrypoint=[],
        network=TEST_NETWORK,
        user="1001:1001",
        cap_drop=["ALL"],
    )
    try:
        code = neighbour.wait(timeout=60)["StatusCode"]
        output = neighbour.logs().decode(errors="replace")
    finally:
        neighbour.remove(force=True)
    assert code != 0 and '"ok":true' not in output, output


def test_a_chat_turn_through_clawhq_reaches_the_model_and_comes_back(access: Access) -> None:
    before = access.http.get(f"/api/agents/{access.agent_id}", headers=access.owner).json()
    calls_before = len([r for r in StandIn.requests if r["path"].endswith("/chat/completions")])
    url = f"/api/agents/{access.agent_id}/v1/chat/completions"
    body = {"model": "openclaw", "user": "readme", "messages": [{"role": "user", "content": "Hi"}]}
    reply = access.http.post(url, json=body, headers=access.owner, timeout=180)
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"] == StandIn.answer
    streamed = ""
    with access.http.stream(
        "POST", url, json={**body, "stream": True}, headers=access.owner, timeout=180
    ) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data: {"):
                streamed += json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
    assert streamed == StandIn.answer
    calls = [r for r in StandIn.requests if r["path"].endswith("/chat/completions")]
    # The agent sent its ClawHQ token; the model got the agent's own key, from ClawHQ.
    assert calls and all(r["auth"] == f"Bearer {OWN_KEY}" for r in calls)
    assert all(r["path"] == "/chat/completions" for r in calls)
    # Every model call was metered by ClawHQ: totalTokens grew by exactly what the stand-in
    # reported (100 in, 5 out a call), however many calls the agent's turns made.
    expected = before["totalTokens"] + 105 * (len(calls) - calls_before)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        shown = access.http.get(f"/api/agents/{access.agent_id}", headers=access.owner).json()
        if shown["totalTokens"] == expected:
            break
        time.sleep(0.2)
    assert shown["totalTokens"] == expected > before["totalTokens"]
    usage = access.http.get(
        f"/api/agents/{access.agent_id}/usage", params={"groupBy": "model"}, headers=access.owner
    ).json()
    assert usage["totals"]["inputTokens"] == 100 * usage["totals"]["requests"]
    models = access.http.get(f"/api/agents/{access.agent_id}/v1/models", headers=access.owner)
    assert "openclaw" in [m["id"] for m in models.json()["data"]]
    shown = access.http.get(f"/api/agents/{access.agent_id}", headers=access.owner).json()
    assert shown["lastActiveAt"]


def chromium() -> str:
    import shutil

    found = shutil.which("chromium")
    if found is None:
        from tests.conftest import unavailable

        unavailable("Chromium", "Debian's chromium is not installed")
    return str(found)


def test_a_browser_logs_in_and_sees_its_agent_connected(access: Access) -> None:
    """Headless Chromium: the agent's URL, ClawHQ's login, then the Control UI, connected."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    start = f"{access.origin}/agents/{access.agent_id}/"
    base = f"{access.agent_origin}/agents/{access.agent_id}/"
    frames: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.on(
                "websocket",
                lambda ws: ws.on("framereceived", lambda frame: frames.append(str(frame))),
            )
            page.goto(start)
            page.wait_for_url(lambda url: "/?next=" in url)  # /login sends it to the sign-in page
            page.fill("input[name=email]", access.owner_email)
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(lambda url: url.startswith(base))  # on the agent's own origin
            # The DOM check: the Control UI's own connection state (inside its shadow DOM).
            status = page.get_by_text("Connected", exact=True).first
            try:
                status.wait_for(state="attached", timeout=90_000)
            finally:
                page.screenshot(path=str(ARTIFACTS / "control-ui.png"), full_page=True)
                (ARTIFACTS / "control-ui.txt").write_text(page.inner_text("body"))
            # The chat view renders its composer once the agent's identity has loaded, which
            # can be a moment after the connection state shows: wait for it, not count it.
            page.get_by_text("Message Assistant").first.wait_for(state="attached", timeout=60_000)
        finally:
            browser.close()
    assert any("hello-ok" in f for f in frames), frames[:5]  # connected as the owner


def test_a_whatsapp_agent_boots_with_its_channel_and_its_channels_view_is_reachable(
    access: Access,
) -> None:
    """WhatsApp cannot be linked here (that needs WhatsApp's servers and a phone): the agent
    boots with the plugin loaded and the channel configured, not linked, and the Control UI's
    Channels view, where its owner would scan the QR code, opens through ClawHQ."""
    body = {
        "name": "whatsapp",
        "modelProvider": "openai",
        "model": "gpt-5",
        "apiKey": "sk-fake-0123456789",
        "channels": ["whatsapp"],
    }
    created = access.http.post("/api/agents", json=body, headers=access.owner)
    assert created.status_code == 201, created.text
    agent_id = created.json()["id"]
    try:
        assert (
            access.http.post(f"/api/agents/{agent_id}/deploy", headers=access.owner).status_code
            == 202
        )
        wait_running(access.http, access.owner, agent_id)
        cookies = access.agent_cookies(access.owner_email, agent_id)
        view = access.http.get(
            f"/agents/{agent_id}/settings/channels", headers={**cookies, "Accept": "text/html"}
        )
        assert view.status_code == 200 and "OpenClaw Control" in view.text
        origin = access.origin_of(agent_id)
        ws_url = origin.replace("http", "ws") + f"/agents/{agent_id}"
        headers = {"Cookie": cookies["Cookie"], "Origin": origin}
        deadline = time.monotonic() + 90
        while True:
            hello, results = asyncio.run(
                control_ui_connect(ws_url, headers, ("channels.status",), access.loopback)
            )
            if hello["ok"] or not hello["error"].get("retryable") or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert hello["ok"], hello
        assert results[0]["ok"], results
        account = results[0]["payload"]["channelAccounts"]["whatsapp"][0]
        assert account["configured"] is True and account["enabled"] is True
        assert account["linked"] is False
    finally:
        access.http.delete(f"/api/agents/{agent_id}?keepWorkspace=false", headers=access.owner)
