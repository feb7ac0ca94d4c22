"""The agents' listener serves their webhook and the LLM gateway, and nothing else of the app."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from clawhq.api.agent_listener import AGENT_PATHS, AgentOnly
from tests.conftest import Api


@pytest.mark.parametrize(
    ("path", "served"),
    [
        ("/api/agents/abc123/webhook", True),
        ("/llm/anthropic/v1/messages", True),
        ("/llm/openai/v1/chat/completions", True),
        ("/api/agents", False),
        ("/api/agents/abc123", False),
        ("/api/agents/abc123/webhook/x", False),
        ("/api/agents/abc123/v1/chat/completions", False),  # the agent proxy's chat API
        ("/agents/abc123/", False),  # the Control UI through the proxy
        ("/api/auth/login", False),
        ("/login", False),
        ("/metrics", False),
        ("/health", False),
        ("/docs", False),
        ("/llm", False),
    ],
)
def test_only_an_agents_own_paths_are_served(path: str, served: bool) -> None:
    assert bool(AGENT_PATHS.match(path)) is served


def test_the_user_api_is_a_404_problem_there_and_webhooks_go_through(fake_api: Api) -> None:
    me = fake_api.user()
    agent = fake_api.agent(me)
    assert fake_api.client.get("/api/agents", headers=me).status_code == 200
    side = TestClient(AgentOnly(fake_api.client.app))  # the same app, as agents see it
    for method, path in (("GET", "/api/agents"), ("GET", "/metrics"), ("POST", "/api/auth/login")):
        reply = side.request(method, path, headers=me)
        assert reply.status_code == 404, (path, reply.text)
        assert reply.headers["content-type"].startswith("application/problem+json")
        assert reply.json()["code"] == "not_found"
    # The webhook route itself is reached (a wrong token: 401, not the listener's 404).
    hook = side.post(f"/api/agents/{agent['id']}/webhook", json={"type": "heartbeat"})
    assert hook.status_code == 401, hook.text
    from starlette.websockets import WebSocketDisconnect

    with pytest.raises(WebSocketDisconnect), side.websocket_connect(f"/agents/{agent['id']}/"):
        pass  # refused outright


def test_health_reports_the_agents_listener(fake_api: Api) -> None:
    body = fake_api.client.get("/health").json()
    # The fake engine's gateway (10.99.0.1) is not an address of this machine.
    assert body["agentListener"].startswith("not listening: cannot listen on port ")
