"""Webhooks from agents: per-agent tokens, heartbeats, usage counted once."""

from __future__ import annotations

from tests.conftest import Api, handed_secrets
from tests.doubles.runtime import FakeRuntime


def deployed_agent(api: Api, runtime: FakeRuntime) -> tuple[str, dict[str, str]]:
    me = api.user()
    agent = api.agent(me)
    body = api.client.post(f"/api/agents/{agent['id']}/deploy", headers=me).json()
    token = handed_secrets(runtime, body["containerId"])["CLAWHQ_WEBHOOK_TOKEN"]
    return agent["id"], {"Authorization": f"Bearer {token}"}


def test_heartbeat_sets_last_heartbeat(fake_api: Api, fake_runtime: FakeRuntime) -> None:
    agent_id, hook = deployed_agent(fake_api, fake_runtime)
    reply = fake_api.client.post(
        f"/api/agents/{agent_id}/webhook", json={"type": "heartbeat"}, headers=hook
    )
    assert reply.status_code == 200 and reply.json() == {"accepted": True, "duplicate": False}
    with fake_api.context.sessions() as session:
        from clawhq.db.models import Agent

        assert session.get(Agent, agent_id).last_heartbeat is not None


def test_usage_counts_messages_once_per_event_id_and_never_the_agents_tokens(
    fake_api: Api, fake_runtime: FakeRuntime
) -> None:
    agent_id, hook = deployed_agent(fake_api, fake_runtime)
    url = f"/api/agents/{agent_id}/webhook"
    event = {"type": "usage", "messages": 2, "tokens": 300, "eventId": "evt-1"}
    assert fake_api.client.post(url, json=event, headers=hook).json()["duplicate"] is False
    assert fake_api.client.post(url, json=event, headers=hook).json()["duplicate"] is True
    fake_api.client.post(url, json={**event, "eventId": "evt-2", "tokens": 50}, headers=hook)
    from clawhq.db.models import Agent

    with fake_api.context.sessions() as session:
        agent = session.get(Agent, agent_id)
        # Tokens come from the LLM gateway's ledger only: an agent's own count is ignored.
        assert (agent.total_messages, agent.total_tokens) == (4, 0)
        assert agent.last_active_at is not None


def test_wrong_or_foreign_tokens_are_refused(fake_api: Api, fake_runtime: FakeRuntime) -> None:
    first, _first_hook = deployed_agent(fake_api, fake_runtime)
    _second, second_hook = deployed_agent(fake_api, fake_runtime)
    url = f"/api/agents/{first}/webhook"
    for headers in ({}, {"Authorization": "Bearer whk_wrong"}, second_hook):
        reply = fake_api.client.post(url, json={"type": "heartbeat"}, headers=headers)
        assert reply.status_code == 401
        assert reply.json()["code"] in ("invalid_webhook_token",)
    # A user's API token is not a webhook token either.
    me = fake_api.user()
    reply = fake_api.client.post(url, json={"type": "heartbeat"}, headers=me)
    assert reply.status_code == 401


def test_redeploy_rotates_the_webhook_token(fake_api: Api, fake_runtime: FakeRuntime) -> None:
    me = fake_api.user()
    agent = fake_api.agent(me)
    first = fake_api.client.post(f"/api/agents/{agent['id']}/deploy", headers=me).json()
    old = handed_secrets(fake_runtime, first["containerId"])["CLAWHQ_WEBHOOK_TOKEN"]
    import time

    for _ in range(100):
        if (
            fake_api.client.get(f"/api/agents/{agent['id']}", headers=me).json()["status"]
            == "RUNNING"
        ):
            break
        time.sleep(0.02)
    fake_api.client.post(f"/api/agents/{agent['id']}/deploy", headers=me)
    reply = fake_api.client.post(
        f"/api/agents/{agent['id']}/webhook",
        json={"type": "heartbeat"},
        headers={"Authorization": f"Bearer {old}"},
    )
    assert reply.status_code == 401


def test_bad_events_are_422(fake_api: Api, fake_runtime: FakeRuntime) -> None:
    agent_id, hook = deployed_agent(fake_api, fake_runtime)
    url = f"/api/agents/{agent_id}/webhook"
    for body in (
        {"type": "usage", "messages": -1, "tokens": 1, "eventId": "e"},
        {"type": "nope"},
        {"type": "usage", "messages": 1, "tokens": 1},
    ):
        reply = fake_api.client.post(url, json=body, headers=hook)
        assert reply.status_code == 422, body
