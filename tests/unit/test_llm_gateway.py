"""The LLM gateway under a real server (uvicorn, as `clawhq serve` runs it), the in-memory
engine, and a stand-in upstream speaking each provider's wire format: keys, bytes, the ledger,
revocation, limits and hostile input."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from clawhq.api.app import create_app
from clawhq.context import build_context
from clawhq.db.models import Agent, LlmCall, User
from clawhq.services import users
from clawhq.settings import Settings
from tests.conftest import TEST_IMAGE, handed_secrets
from tests.doubles.runtime import FakeRuntime
from tests.standins.gateway import free_port, serving
from tests.standins.llm import TOTALS, LLMStandIn

OWN_KEY = "sk-own-0123456789abcdef"
BUNDLED = {
    "claude": "sk-bundled-anthropic",
    "openai": "sk-bundled-openai",
    "gemini": "bundled-gemini",
    "deepseek": "sk-bundled-deepseek",
    "grok": "xai-bundled",
}
PROVIDER = {
    "claude": "anthropic",
    "openai": "openai",
    "gemini": "google",
    "deepseek": "deepseek",
    "grok": "xai",
}
MODEL = {
    "claude": "claude-sonnet-4-6",
    "openai": "gpt-5",
    "gemini": "gemini-2.5-pro",
    "deepseek": "deepseek-chat",
    "grok": "grok-4",
}


@dataclass
class Served:
    base: str
    runtime: FakeRuntime
    context: Any
    llm: LLMStandIn
    http: httpx.Client

    def user(self, plan: str = "free", *, admin: bool = False) -> dict[str, str]:
        """A new user's auth headers (``X-User-Id``: its id, which the API ignores)."""
        email = f"g{time.monotonic_ns()}@example.com"
        reply = self.http.post(
            "/api/auth/register", json={"email": email, "password": "correct horse battery"}
        )
        assert reply.status_code == 201, reply.text
        body = reply.json()
        with self.context.sessions() as session:
            if plan != "free":
                users.set_plan(session, body["user"]["id"], plan)
            session.get(User, body["user"]["id"]).is_admin = admin
            session.commit()
        return {"Authorization": f"Bearer {body['token']}", "X-User-Id": body["user"]["id"]}

    def agent(self, owner: dict[str, str], provider: str = "claude", **fields: Any) -> str:
        body = {"name": f"a{time.monotonic_ns()}", "modelProvider": provider}
        body["model"] = MODEL[provider]
        body.update(fields if fields else {"apiKey": OWN_KEY})
        reply = self.http.post("/api/agents", json=body, headers=owner)
        assert reply.status_code == 201, reply.text
        return str(reply.json()["id"])

    def deploy(self, owner: dict[str, str], agent_id: str, action: str = "deploy") -> str:
        """Deploys (or starts) the agent; returns its container's LLM token."""
        reply = self.http.post(f"/api/agents/{agent_id}/{action}", headers=owner)
        assert reply.status_code == 202, reply.text
        for _ in range(500):
            agent = self.http.get(f"/api/agents/{agent_id}", headers=owner).json()
            if agent["status"] == "RUNNING":
                return str(handed_secrets(self.runtime, agent["containerId"])["CLAWHQ_API_KEY"])
            time.sleep(0.02)
        raise AssertionError(f"agent did not come up: {agent}")

    def calls(self, agent_id: str) -> list[LlmCall]:
        with self.context.sessions() as session:
            query = select(LlmCall).where(LlmCall.agent_id == agent_id).order_by(LlmCall.id)
            return list(session.scalars(query))

    def total_tokens(self, agent_id: str) -> int:
        with self.context.sessions() as session:
            return int(session.get(Agent, agent_id).total_tokens)

    def wait_calls(self, agent_id: str, count: int) -> list[LlmCall]:
        for _ in range(500):
            found = self.calls(agent_id)
            if len(found) >= count:
                return found
            time.sleep(0.01)
        raise AssertionError(f"{len(self.calls(agent_id))} ledger rows, wanted {count}")


@pytest.fixture
def served(make_settings: Callable[..., Settings]) -> Iterator[Served]:
    with ExitStack() as stack:
        llm = stack.enter_context(LLMStandIn())
        port = free_port()
        settings = make_settings(
            supervise=False,
            port=port,
            llm_timeout=3,
            llm_max_body="1m",
            **{f"llm_upstream_{p}": llm.upstream(p) for p in PROVIDER.values()},
            **{f"{p}_api_key": key for p, key in BUNDLED.items()},
        )
        runtime = FakeRuntime(images={TEST_IMAGE})
        context = build_context(settings, runtime=runtime, probe=lambda url: True)
        stack.enter_context(serving("127.0.0.1", port, create_app(lambda: context)))
        base = f"http://127.0.0.1:{port}"
        client = stack.enter_context(httpx.Client(base_url=base, timeout=10))
        yield Served(base, runtime, context, llm, client)


def key_headers(provider: str, token: str) -> dict[str, str]:
    """Where each provider's own SDK puts its key."""
    if provider == "claude":
        return {"x-api-key": token, "anthropic-version": "2023-06-01"}
    if provider == "gemini":
        return {"x-goog-api-key": token}
    return {"Authorization": f"Bearer {token}"}


def chat_body(provider: str, path: str, stream: bool) -> dict[str, Any]:
    text = [{"role": "user", "content": "hi"}]
    if provider == "gemini":
        return {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    if path.endswith("/responses"):
        return {"model": MODEL[provider], "input": "hi", "stream": stream}
    body: dict[str, Any] = {"model": MODEL[provider], "messages": text, "stream": stream}
    if provider == "claude":
        body["max_tokens"] = 64
    return body


#: (agent provider, path, query, streamed, the stand-in's usage format)
CASES = [
    ("claude", "/v1/messages", "", False, "anthropic"),
    ("claude", "/v1/messages", "", True, "anthropic"),
    ("openai", "/v1/chat/completions", "", False, "openai_chat"),
    ("openai", "/v1/chat/completions", "", True, "openai_chat"),
    ("openai", "/v1/responses", "", False, "openai_responses"),
    ("openai", "/v1/responses", "", True, "openai_responses"),
    ("gemini", "/v1beta/models/gemini-2.5-pro:generateContent", "", False, "gemini"),
    ("gemini", "/v1beta/models/gemini-2.5-pro:streamGenerateContent", "alt=sse", True, "gemini"),
    ("gemini", "/v1beta/models/gemini-2.5-pro:streamGenerateContent", "", True, "gemini"),
    ("deepseek", "/chat/completions", "", False, "deepseek"),
    ("deepseek", "/chat/completions", "", True, "deepseek"),
    ("grok", "/v1/chat/completions", "", True, "xai"),
    ("grok", "/v1/responses", "", True, "xai_responses"),
]


@pytest.mark.parametrize(("provider", "path", "query", "stream", "usage"), CASES)
def test_a_call_reaches_the_provider_with_the_real_key_and_every_token_is_metered(
    served: Served, provider: str, path: str, query: str, stream: bool, usage: str
) -> None:
    owner = served.user("pro")
    own = served.agent(owner, provider)
    bundled = served.agent(owner, provider, usesBundledApi=True)
    for agent_id, real_key in ((own, OWN_KEY), (bundled, BUNDLED[provider])):
        token = served.deploy(owner, agent_id)
        url = f"/llm/{PROVIDER[provider]}{path}" + (f"?{query}" if query else "")
        body = chat_body(provider, path, stream)
        # The client asked for usage itself: the stream comes back exactly as the provider sent it.
        if stream and "chat/completions" in path:
            body["stream_options"] = {"include_usage": True}
        reply = served.http.post(url, json=body, headers=key_headers(provider, token))
        assert reply.status_code == 200, reply.text
        call = served.llm.calls[-1]
        assert call.key == real_key and token not in str(call.headers)
        assert reply.content == call.answer  # byte for byte
        rows = served.wait_calls(agent_id, 1)
        assert [r.total_tokens for r in rows] == [TOTALS[usage]]
        assert rows[0].key_source == ("own" if real_key == OWN_KEY else "bundled")
        assert rows[0].provider == PROVIDER[provider] and rows[0].outcome == "ok"
        assert served.total_tokens(agent_id) == TOTALS[usage]


def test_usage_the_client_did_not_ask_for_is_counted_and_not_shown(served: Served) -> None:
    owner = served.user()
    agent_id = served.agent(owner, "openai")
    token = served.deploy(owner, agent_id)
    body = chat_body("openai", "/v1/chat/completions", True)
    reply = served.http.post(
        "/llm/openai/v1/chat/completions", json=body, headers=key_headers("openai", token)
    )
    assert reply.status_code == 200
    sent = served.llm.calls[-1]
    assert sent.body["stream_options"] == {"include_usage": True}  # asked for by ClawHQ
    assert b'"usage"' in sent.answer and b'"usage"' not in reply.content
    assert reply.content.endswith(b"data: [DONE]\n\n")
    assert served.wait_calls(agent_id, 1)[0].total_tokens == TOTALS["openai_chat"]


def test_an_agent_that_hangs_up_mid_stream_is_still_charged(served: Served) -> None:
    owner = served.user()
    agent_id = served.agent(owner, "claude")
    token = served.deploy(owner, agent_id)
    served.llm.stream_delay, served.llm.stream_chunks = 0.05, 20
    body = chat_body("claude", "/v1/messages", True)
    with served.http.stream(
        "POST", "/llm/anthropic/v1/messages", json=body, headers=key_headers("claude", token)
    ) as reply:
        first = next(reply.iter_raw())
        assert first
    rows = served.wait_calls(agent_id, 1)
    assert rows[0].outcome == "client_gone"
    assert rows[0].total_tokens == TOTALS["anthropic"]  # the whole answer, read to its end
    assert served.llm.calls[-1].completed


def test_a_token_is_revoked_by_stop_delete_and_redeploy(served: Served) -> None:
    owner = served.user()
    agent_id = served.agent(owner, "claude")
    url, body = "/llm/anthropic/v1/messages", chat_body("claude", "/v1/messages", False)

    def status(token: str) -> httpx.Response:
        return served.http.post(url, json=body, headers=key_headers("claude", token))

    first = served.deploy(owner, agent_id)
    assert status(first).status_code == 200
    second = served.deploy(owner, agent_id)  # a redeploy: a new container, a new token
    assert second != first
    refused = status(first)
    assert refused.status_code == 401
    assert refused.json() == {
        "type": "error",
        "error": {
            "type": "authentication_error",
            "message": refused.json()["error"]["message"],
        },
    }
    assert refused.headers["x-clawhq-error"] == "invalid_llm_token"
    assert status(second).status_code == 200
    assert served.http.post(f"/api/agents/{agent_id}/stop", headers=owner).status_code == 200
    assert status(second).status_code == 401  # at once, not when the container is gone
    third = served.deploy(owner, agent_id, "start")
    assert third not in (first, second) and status(third).status_code == 200
    assert served.http.delete(f"/api/agents/{agent_id}", headers=owner).status_code == 204
    assert status(third).status_code == 401
    assert len(served.wait_calls(agent_id, 3)) == 3  # only the calls that went through


@pytest.mark.parametrize(
    ("provider", "where"),
    [
        ("claude", "x-api-key"),
        ("openai", "bearer"),
        ("gemini", "x-goog-api-key"),
        ("gemini", "query"),
    ],
)
def test_unknown_tokens_are_refused_in_the_providers_format(
    served: Served, provider: str, where: str
) -> None:
    path = {"claude": "/v1/messages", "openai": "/v1/chat/completions"}.get(
        provider, "/v1beta/models/m:generateContent"
    )
    bogus = "chqllm_" + "A" * 43
    headers = {
        "x-api-key": {"x-api-key": bogus},
        "bearer": {"Authorization": f"Bearer {bogus}"},
        "x-goog-api-key": {"x-goog-api-key": bogus},
        "query": {},
    }[where]
    query = f"?key={bogus}" if where == "query" else ""
    reply = served.http.post(
        f"/llm/{PROVIDER[provider]}{path}{query}",
        json=chat_body(provider, path, False),
        headers=headers,
    )
    assert reply.status_code == 401
    error = reply.json()
    if provider == "claude":
        assert error["error"]["type"] == "authentication_error"
    elif provider == "gemini":
        assert error["error"]["status"] == "UNAUTHENTICATED" and error["error"]["code"] == 401
    else:
        assert error["error"]["code"] == "invalid_api_key"
    assert served.llm.calls == []  # nothing reached the provider


def test_the_monthly_budget_trips_with_a_provider_shaped_429(served: Served) -> None:
    owner = served.user("pro")
    agent_id = served.agent(owner, "openai", usesBundledApi=True)
    token = served.deploy(owner, agent_id)
    budget = 2 * TOTALS["openai_chat"] + 5  # room for two calls, not for a third's input
    admin = served.http.patch(
        "/api/admin/plans/pro/llm",
        json={"monthlyTokenBudget": budget},
        headers=admin_headers(served),
    )
    assert admin.status_code == 200, admin.text
    url, body = (
        "/llm/openai/v1/chat/completions",
        chat_body("openai", "/v1/chat/completions", False),
    )
    headers = key_headers("openai", token)
    assert served.http.post(url, json=body, headers=headers).status_code == 200
    served.wait_calls(agent_id, 1)
    assert served.http.post(url, json=body, headers=headers).status_code == 200  # 48 left
    served.wait_calls(agent_id, 2)
    over = served.http.post(url, json=body, headers=headers)  # 5 left: less than its input
    assert over.status_code == 429
    assert over.json()["error"]["code"] == "insufficient_quota"
    assert over.json()["error"]["type"] == "insufficient_quota"
    assert over.headers["x-clawhq-error"] == "llm_budget_exhausted"
    mine = served.http.get("/api/usage", headers=owner).json()
    assert mine["budget"] == {
        "monthlyTokens": budget,
        "appliesTo": "bundled",
        "used": 2 * TOTALS["openai_chat"],
        "remaining": 5,
    }
    assert mine["totals"]["requests"] == 2


def test_requests_per_minute_trip_with_a_provider_shaped_429(served: Served) -> None:
    owner = served.user()
    agent_id = served.agent(owner, "gemini")
    token = served.deploy(owner, agent_id)
    served.http.patch(
        "/api/admin/plans/free/llm", json={"llmRequestsPerMinute": 2}, headers=admin_headers(served)
    )
    path = "/llm/google/v1beta/models/gemini-2.5-pro:generateContent"
    body = chat_body("gemini", path, False)
    codes = [
        served.http.post(path, json=body, headers=key_headers("gemini", token)).status_code
        for _ in range(3)
    ]
    assert codes == [200, 200, 429]
    limited = served.http.post(path, json=body, headers=key_headers("gemini", token))
    assert limited.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.headers["x-clawhq-error"] == "llm_requests_per_minute"


def test_a_plan_downgrade_takes_the_bundled_key_away_on_the_next_call(served: Served) -> None:
    owner = served.user("pro")
    agent_id = served.agent(owner, "claude", usesBundledApi=True)
    token = served.deploy(owner, agent_id)
    url, body = "/llm/anthropic/v1/messages", chat_body("claude", "/v1/messages", False)
    assert served.http.post(url, json=body, headers=key_headers("claude", token)).status_code == 200
    moved = served.http.patch(
        f"/api/admin/users/{owner['X-User-Id']}",
        json={"plan": "free"},
        headers=admin_headers(served),
    )
    assert moved.status_code == 200, moved.text
    refused = served.http.post(url, json=body, headers=key_headers("claude", token))
    assert refused.status_code == 403
    assert refused.json()["error"]["type"] == "permission_error"
    agent = served.http.get(f"/api/agents/{agent_id}", headers=owner).json()
    assert agent["llmAccess"]["ok"] is False
    assert agent["llmAccess"]["code"] == "bundled_keys_not_allowed"
    events = served.http.get(f"/api/agents/{agent_id}/events", headers=owner).json()
    assert any(e.get("kind") == "llm_access" for e in events.get("events", events))


def test_upstream_failures_pass_through_with_their_status(served: Served) -> None:
    owner = served.user()
    agent_id = served.agent(owner, "openai")
    token = served.deploy(owner, agent_id)
    failure = b'{"error":{"message":"overloaded","type":"server_error"}}'
    served.llm.fail_next(529, failure)
    url, body = (
        "/llm/openai/v1/chat/completions",
        chat_body("openai", "/v1/chat/completions", False),
    )
    reply = served.http.post(url, json=body, headers=key_headers("openai", token))
    assert (reply.status_code, reply.content) == (529, failure)
    assert served.wait_calls(agent_id, 1)[0].outcome == "error"


@pytest.mark.parametrize(
    "path",
    [
        "/llm/nope/v1/messages",
        "/llm/anthropic/../admin",
        "/llm/anthropic/%2e%2e/%2e%2e/api/admin/users",
        "/llm/anthropic/@evil.example/v1/messages",
        "/llm/anthropic/v1/messages%3Fx=1",
    ],
)
def test_nothing_a_client_sends_chooses_the_upstream_host(served: Served, path: str) -> None:
    owner = served.user()
    agent_id = served.agent(owner, "claude")
    token = served.deploy(owner, agent_id)
    headers = {**key_headers("claude", token), "Host": "evil.example"}
    reply = served.http.post(path, json=chat_body("claude", "", False), headers=headers)
    assert reply.status_code in (307, 404), reply.text  # never a 200 from anywhere else
    for call in served.llm.calls:  # whatever went upstream went to the configured one
        assert call.provider == "anthropic" and call.path.startswith("/@evil.example/")


def test_oversized_bodies_and_other_providers_are_refused(served: Served) -> None:
    owner = served.user()
    agent_id = served.agent(owner, "claude")
    token = served.deploy(owner, agent_id)
    big = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x" * 2**20}]}
    reply = served.http.post(
        "/llm/anthropic/v1/messages", json=big, headers=key_headers("claude", token)
    )
    assert reply.status_code == 413 and reply.json()["error"]["type"] == "request_too_large"
    other = served.http.post(
        "/llm/openai/v1/chat/completions",
        json=chat_body("openai", "/v1/chat/completions", False),
        headers=key_headers("openai", token),
    )
    assert (
        other.status_code == 403 and other.headers["x-clawhq-error"] == "llm_provider_not_allowed"
    )
    assert served.llm.calls == []


def admin_headers(served: Served) -> dict[str, str]:
    return served.user(admin=True)


def test_listings_pass_unmetered_and_billable_paths_the_meter_cannot_read_are_refused(
    served: Served,
) -> None:
    owner = served.user()
    agent_id = served.agent(owner, "openai")
    token = served.deploy(owner, agent_id)
    headers = key_headers("openai", token)
    listing = served.http.get("/llm/openai/v1/models", headers=headers)
    assert listing.status_code == 200 and listing.content == served.llm.calls[-1].answer
    assert served.llm.calls[-1].key == OWN_KEY
    before = len(served.llm.calls)
    for path in ("/v1/embeddings", "/v1/images/generations", "/v1/batches"):
        refused = served.http.post(f"/llm/openai{path}", json={"input": "x"}, headers=headers)
        assert refused.status_code == 404
        assert refused.headers["x-clawhq-error"] == "llm_path_not_served"
    assert len(served.llm.calls) == before
    time.sleep(0.3)  # past the ledger writer's linger: a row would be there by now
    assert served.calls(agent_id) == []  # a listing costs nothing and is not in the ledger


def test_usage_reports_per_day_and_model_for_the_owner_only(served: Served) -> None:
    owner = served.user()
    agent_id = served.agent(owner, "claude")
    token = served.deploy(owner, agent_id)
    body = chat_body("claude", "/v1/messages", False)
    for _ in range(2):
        reply = served.http.post(
            "/llm/anthropic/v1/messages", json=body, headers=key_headers("claude", token)
        )
        assert reply.status_code == 200
    served.wait_calls(agent_id, 2)
    url = f"/api/agents/{agent_id}/usage"
    by_day = served.http.get(url, headers=owner).json()
    assert by_day["groupBy"] == "day"
    assert by_day["totals"]["requests"] == 2
    assert by_day["totals"]["totalTokens"] == 2 * TOTALS["anthropic"]
    assert by_day["totals"]["cacheReadTokens"] == 14 and by_day["totals"]["cacheWriteTokens"] == 6
    [day] = by_day["groups"]
    assert day["key"] == time.strftime("%Y-%m-%d", time.gmtime())
    by_model = served.http.get(url, params={"groupBy": "model"}, headers=owner).json()
    assert [g["key"] for g in by_model["groups"]] == [served.llm.calls[-1].body["model"]]
    yesterday = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400))
    empty = served.http.get(url, params={"from": yesterday, "to": yesterday}, headers=owner).json()
    assert empty["totals"]["requests"] == 0 and empty["groups"] == []
    backwards = served.http.get(
        url, params={"from": "2026-12-02", "to": "2026-11-01"}, headers=owner
    )
    assert backwards.status_code == 400 and backwards.json()["code"] == "invalid_time_range"
    assert served.http.get(url, headers=served.user()).status_code == 404
    everyone = served.http.get(
        "/api/admin/usage", params={"groupBy": "agent"}, headers=admin_headers(served)
    ).json()
    assert {"key": agent_id, "requests": 2} in [
        {"key": g["key"], "requests": g["requests"]} for g in everyone["groups"]
    ]
