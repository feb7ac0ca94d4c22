"""The real OpenClaw image behind ClawHQ's LLM gateway: for each provider, the path and the
header the gateway's adapter uses with ``CLAWHQ_LLM_BASE_URL=http://<clawhq>/llm/<provider>``.

One container per provider, all started at once on an *internal* bridge network (nothing leaves
the machine: the containers reach only the host, on the network's gateway address, where a
recorder answers in each provider's wire format). Each volume holds, before the first start, a
models.json naming the provider with a foreign baseUrl and key, as another release or the agent
itself could leave there: the entrypoint removes it, and nothing goes to the foreign URL.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.integration.helpers import exec_in, run_container, scratch_bridge, sdk
from tests.integration.test_openclaw_image import HARDENING, agent_env, proxy_headers

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

TOKEN = "chqllm_" + "Ab0-_" * 8 + "xyz"  # a per-agent ClawHQ LLM token (43 URL-safe chars)
FOREIGN_KEY = "sk-foreign-0123456789"
ANSWER = "Hello through ClawHQ."
AGENT_DIR = "/home/openclaw/.openclaw/agents/main/agent"


@dataclass(frozen=True)
class Case:
    gateway: str  # ClawHQ's gateway provider name: /llm/<gateway>
    model: str
    paths: tuple[str, ...]  # the provider's real API paths: every call must be to one of them
    header: str
    value: str


#: ClawHQ's provider -> what OpenClaw 2026.9.6 sends with our baseUrl (measured here).
CASES = {
    "claude": Case("anthropic", "claude-sonnet-4-6", ("/v1/messages",), "x-api-key", TOKEN),
    "openai": Case("openai", "gpt-5", ("/v1/responses",), "authorization", f"Bearer {TOKEN}"),
    "gemini": Case(
        "google",
        "gemini-2.5-pro",
        ("/v1beta/models/gemini-2.5-pro:streamGenerateContent",),
        "x-goog-api-key",
        TOKEN,
    ),
    "deepseek": Case(
        "deepseek", "deepseek-chat", ("/chat/completions",), "authorization", f"Bearer {TOKEN}"
    ),
    "grok": Case("xai", "grok-4", ("/v1/responses",), "authorization", f"Bearer {TOKEN}"),
}
KEY_HEADERS = ("authorization", "x-api-key", "x-goog-api-key", "api-key")


# -- the recorder: any provider's wire format, at /llm/<p>/... and /foreign/<p>/... ------------


def sse(*events: tuple[str | None, dict[str, Any]]) -> bytes:
    return b"".join(
        (f"event: {name}\n" if name else "").encode() + f"data: {json.dumps(data)}\n\n".encode()
        for name, data in events
    )


def anthropic(model: str) -> bytes:
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": model}
    message |= {"content": [], "stop_reason": None, "usage": {"input_tokens": 10}}
    text = {"type": "text", "text": ""}
    block = {"type": "content_block_start", "index": 0, "content_block": text}
    delta = {"type": "text_delta", "text": ANSWER}
    return sse(
        ("message_start", {"type": "message_start", "message": message}),
        ("content_block_start", block),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": 5},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    )


def chat(model: str) -> bytes:
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": model}
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    first = {"index": 0, "delta": {"role": "assistant", "content": ANSWER}, "finish_reason": None}
    last = {"index": 0, "delta": {}, "finish_reason": "stop"}
    return (
        sse(
            (None, {**chunk, "choices": [first]}),
            (None, {**chunk, "choices": [last], "usage": usage}),
        )
        + b"data: [DONE]\n\n"
    )


def responses(model: str) -> bytes:
    part = {"type": "output_text", "text": ANSWER, "annotations": []}
    item = {"type": "message", "id": "m1", "role": "assistant", "status": "completed"}
    item["content"] = [part]
    done = {"id": "r1", "object": "response", "created_at": 1, "model": model}
    done |= {"status": "completed", "output": [item]}
    done["usage"] = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}
    started = {**done, "status": "in_progress", "output": [], "usage": None}
    at = {"item_id": "m1", "output_index": 0, "content_index": 0}
    events = [
        ("response.created", {"response": started}),
        ("response.output_item.added", {"output_index": 0, "item": {**item, "content": []}}),
        ("response.content_part.added", {**at, "part": {**part, "text": ""}}),
        ("response.output_text.delta", {**at, "delta": ANSWER}),
        ("response.output_text.done", {**at, "text": ANSWER}),
        ("response.content_part.done", {**at, "part": part}),
        ("response.output_item.done", {"output_index": 0, "item": item}),
        ("response.completed", {"response": done}),
    ]
    return sse(*((n, {"type": n, "sequence_number": i, **d}) for i, (n, d) in enumerate(events)))


def gemini(model: str) -> bytes:
    candidate = {"content": {"parts": [{"text": ANSWER}], "role": "model"}, "index": 0}
    candidate["finishReason"] = "STOP"
    usage = {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15}
    return sse((None, {"candidates": [candidate], "usageMetadata": usage, "modelVersion": model}))


@dataclass
class Recorder:
    """Records every request (path, query, headers, body); answers the model endpoints."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    def under(self, prefix: str) -> list[dict[str, Any]]:
        return [c for c in self.calls if c["path"].startswith(prefix)]


def recorder_handler(recorder: Recorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            body = json.loads(raw or b"{}")
            path, _, query = self.path.partition("?")
            headers = {k.lower(): v for k, v in self.headers.items()}
            recorder.calls.append({"path": path, "query": query, "headers": headers, "body": body})
            model = str(body.get("model") or "")
            answers = (
                ("/messages", anthropic),
                ("/chat/completions", chat),
                ("/responses", responses),
                (":streamGenerateContent", gemini),
            )
            answer = next((make for end, make in answers if path.endswith(end)), None)
            data = answer(model) if answer else b"{}"
            self.send_response(200 if answer else 404)
            self.send_header("content-type", "text/event-stream" if answer else "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST  # noqa: N815 (http.server's name)

    return Handler


# -- fixtures: an internal network, the recorder on its gateway address, five gateways --------


@pytest.fixture(scope="module")
def internal_bridge() -> Iterator[tuple[str, str]]:
    """A bridge like ClawHQ's, but internal: its containers reach the host and nothing else."""
    with scratch_bridge("clawhq-test-llm", "openclaw-image", internal=True) as found:
        yield found


@pytest.fixture(scope="module")
def recorder(internal_bridge: tuple[str, str]) -> Iterator[Recorder]:
    found = Recorder()
    server = ThreadingHTTPServer((internal_bridge[1], 0), recorder_handler(found))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    found.url = f"http://{internal_bridge[1]}:{server.server_address[1]}"
    try:
        yield found
    finally:
        server.shutdown()
        server.server_close()


def stale_models_json(recorder: Recorder, case: Case) -> str:
    """What an older release or the agent could leave: the provider, foreign URL and key."""
    foreign = f"{recorder.url}/foreign/{case.gateway}"
    model = {"id": case.model, "name": "stale", "baseUrl": foreign}
    entry = {"baseUrl": foreign, "apiKey": FOREIGN_KEY, "models": [model]}
    return json.dumps({"providers": {case.gateway: entry}})


@dataclass
class Gateway:
    container: Any
    ip: str
    volume: str


@pytest.fixture(scope="module")
def gateways(
    openclaw_image: str, internal_bridge: tuple[str, str], recorder: Recorder
) -> Iterator[dict[str, Gateway]]:
    """A gateway per provider, all booting at once (each test stops its own when done)."""
    network, proxy_address = internal_bridge
    started: dict[str, Gateway] = {}
    try:
        for provider, case in CASES.items():
            volume = sdk().volumes.create(f"clawhq-test-llm-{uuid.uuid4().hex[:10]}").name
            mount = {volume: {"bind": "/home/openclaw", "mode": "rw"}}
            seed = f'mkdir -p {AGENT_DIR} && printf %s "$SEED" > {AGENT_DIR}/models.json'
            seeder = run_container(
                openclaw_image,
                ["-c", seed],
                entrypoint=["bash"],
                environment={"SEED": stale_models_json(recorder, case)},
                volumes=mount,
                **HARDENING,
            )
            try:
                assert seeder.wait(timeout=60)["StatusCode"] == 0, seeder.logs()
            finally:
                seeder.remove(force=True)
            env = agent_env(
                CLAWHQ_MODEL_PROVIDER=provider,
                CLAWHQ_MODEL=case.model,
                CLAWHQ_API_KEY=TOKEN,
                CLAWHQ_PROXY_ADDRESSES=proxy_address,
                CLAWHQ_LLM_BASE_URL=f"{recorder.url}/llm/{case.gateway}",
                CLAWHQ_HEARTBEAT_INTERVAL="0",
                CLAWHQ_USAGE_INTERVAL="0",
            )
            container = run_container(
                openclaw_image,
                environment=env,
                hostname=f"agent-llm-{provider}",
                volumes=mount,
                labels={"clawhq.test": "openclaw-image"},
                # An agent turn needs more than ClawHQ's 1 GiB default (see test_openclaw_image).
                **{**HARDENING, "network_mode": network, "mem_limit": "2g"},
            )
            container.reload()
            ip = container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]
            started[provider] = Gateway(container, ip, volume)
        yield started
    finally:
        for gateway in started.values():
            gateway.container.remove(force=True)
            sdk().volumes.get(gateway.volume).remove(force=True)


def wait_ready(gateway: Gateway, timeout: float = 400) -> float:
    """Seconds until /readyz says ready (five gateways boot at once on a small machine)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            reply = httpx.get(
                f"http://{gateway.ip}:18789/readyz",
                headers={"X-Forwarded-For": "192.0.2.10"},
                timeout=5,
            )
            if reply.status_code == 200 and reply.json().get("ready") is True:
                return time.monotonic() - started
        except (httpx.HTTPError, ValueError):
            pass
        gateway.container.reload()
        if gateway.container.status == "exited":
            break
        time.sleep(1)
    raise AssertionError(gateway.container.logs().decode(errors="replace")[-3000:])


def model_of(call: dict[str, Any]) -> str:
    """The model a call asks for: in the body, or in Gemini's path (`/models/<m>:…`)."""
    return str(call["body"].get("model") or call["path"].rpartition("/models/")[2].split(":")[0])


@pytest.mark.parametrize("provider", list(CASES))
def test_agent_turn_reaches_clawhqs_llm_gateway_at_the_real_api_path(
    gateways: dict[str, Gateway], recorder: Recorder, provider: str
) -> None:
    case, gateway = CASES[provider], gateways[provider]
    print(f"{provider}: ready after {wait_ready(gateway):.1f} s")
    started = time.monotonic()
    reply = httpx.post(
        f"http://{gateway.ip}:18789/v1/chat/completions",
        headers=proxy_headers(),
        json={"model": "openclaw", "user": "t1", "messages": [{"role": "user", "content": "Hi"}]},
        timeout=300,
    )
    print(f"{provider}: agent turn {time.monotonic() - started:.1f} s")
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"] == ANSWER

    prefix = f"/llm/{case.gateway}"
    calls = recorder.under(f"{prefix}/")
    # The agent's model at the provider's real path under /llm/<p>; utility calls (Anthropic's
    # activity recap with claude-haiku, OpenAI's with gpt-5.6-luna) too, never another path.
    assert [c for c in calls if model_of(c) == case.model], recorder.calls
    assert {c["path"].removeprefix(prefix) for c in calls} <= set(case.paths), calls
    for call in calls:
        assert call["headers"].get(case.header) == case.value, call["headers"]
        others = [h for h in KEY_HEADERS if h != case.header and h in call["headers"]]
        assert not others, call["headers"]
    if case.gateway == "google":
        assert all(c["query"] == "alt=sse" for c in calls)
    # The stale models.json's URL and key were never used, and the file is gone.
    assert not recorder.under(f"/foreign/{case.gateway}/"), recorder.calls
    assert not [c for c in calls if FOREIGN_KEY in json.dumps(c["headers"])]
    logs = gateway.container.logs().decode(errors="replace")
    assert f"clawhq-entrypoint: removed {AGENT_DIR}/models.json" in logs
    code, found = exec_in(gateway.container.id, "bash", "-c", f"cat {AGENT_DIR}/models.json")
    assert code != 0 or "foreign" not in found, found
    # Neither the token nor the foreign key is written to the workspace volume in plaintext.
    for secret in (TOKEN, FOREIGN_KEY):
        code, found = exec_in(gateway.container.id, "grep", "-rl", secret, "/home/openclaw")
        assert code == 1, found
    gateway.container.stop(timeout=10)
