"""Webhooks are rate limited per agent, and usage event ids are kept for a bounded window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from clawhq.db.models import Agent, WebhookEvent
from clawhq.settings import Settings
from tests.conftest import Api, running_app
from tests.doubles.runtime import FakeRuntime
from tests.unit.test_api_webhooks import deployed_agent


def usage(event_id: str) -> dict[str, Any]:
    return {"type": "usage", "messages": 1, "tokens": 10, "eventId": event_id}


def rows(api: Api, agent_id: str) -> list[str]:
    with api.context.sessions() as session:
        query = select(WebhookEvent.event_id).where(WebhookEvent.agent_id == agent_id)
        return sorted(session.scalars(query))


def test_webhooks_are_rate_limited_per_agent(settings: Settings, fake_runtime: FakeRuntime) -> None:
    tight = settings.model_copy(update={"supervise": False, "rate_limit_webhook": 3})
    with running_app(tight, fake_runtime, probe=lambda url: True) as api:
        agent_id, hook = deployed_agent(api, fake_runtime)
        other_id, other_hook = deployed_agent(api, fake_runtime)
        url = f"/api/agents/{agent_id}/webhook"
        codes = [
            api.client.post(url, json=usage(f"e{i}"), headers=hook).status_code for i in range(3)
        ]
        assert codes == [200, 200, 200]
        for body in (usage("e3"), {"type": "heartbeat"}):
            limited = api.client.post(url, json=body, headers=hook)
            assert limited.status_code == 429, limited.text
            assert limited.headers["content-type"] == "application/problem+json"
            assert limited.json()["code"] == "rate_limited"
            assert int(limited.headers["retry-after"]) >= 1
        # Nothing was written for the refused posts.
        assert rows(api, agent_id) == ["e0", "e1", "e2"]
        with api.context.sessions() as session:
            agent = session.get(Agent, agent_id)
            assert (agent.total_messages, agent.total_tokens, agent.last_heartbeat) == (3, 0, None)
        # Budgets are per agent, and a wrong token does not spend the agent's budget.
        other = f"/api/agents/{other_id}/webhook"
        assert api.client.post(other, json=usage("e0"), headers=other_hook).status_code == 200
        wrong = api.client.post(other, json=usage("x"), headers={"Authorization": "Bearer no"})
        assert wrong.status_code == 401


def test_event_ids_older_than_the_window_are_pruned(
    fake_api: Api, fake_runtime: FakeRuntime
) -> None:
    agent_id, hook = deployed_agent(fake_api, fake_runtime)
    now = datetime.now(UTC)
    with fake_api.context.sessions() as session:
        for i, age in enumerate((25, 30, 23)):
            at = now - timedelta(hours=age)
            session.add(WebhookEvent(agent_id=agent_id, event_id=f"old{i}", received_at=at))
        session.commit()
    url = f"/api/agents/{agent_id}/webhook"
    assert fake_api.client.post(url, json=usage("new"), headers=hook).json()["duplicate"] is False
    # The default window is 24 hours: the two older ids are gone, the 23-hour one is kept.
    assert rows(fake_api, agent_id) == ["new", "old2"]
    assert fake_api.client.post(url, json=usage("old2"), headers=hook).json()["duplicate"] is True


def test_the_window_is_configurable(settings: Settings, fake_runtime: FakeRuntime) -> None:
    short = settings.model_copy(update={"supervise": False, "webhook_dedup_hours": 1.0})
    with running_app(short, fake_runtime, probe=lambda url: True) as api:
        agent_id, hook = deployed_agent(api, fake_runtime)
        with api.context.sessions() as session:
            at = datetime.now(UTC) - timedelta(hours=2)
            session.add(WebhookEvent(agent_id=agent_id, event_id="old", received_at=at))
            session.commit()
        api.client.post(f"/api/agents/{agent_id}/webhook", json=usage("new"), headers=hook)
        assert rows(api, agent_id) == ["new"]


def test_one_agent_keeps_a_bounded_number_of_event_ids(
    fake_api: Api, fake_runtime: FakeRuntime
) -> None:
    window = fake_api.services.webhook_events
    window.max_per_agent, window.check_every = 5, 1
    agent_id, hook = deployed_agent(fake_api, fake_runtime)
    other_id, other_hook = deployed_agent(fake_api, fake_runtime)
    fake_api.client.post(f"/api/agents/{other_id}/webhook", json=usage("o"), headers=other_hook)
    url = f"/api/agents/{agent_id}/webhook"
    for i in range(8):
        reply = fake_api.client.post(url, json=usage(f"e{i}"), headers=hook)
        assert reply.status_code == 200 and reply.json()["duplicate"] is False
    assert rows(fake_api, agent_id) == [f"e{i}" for i in range(3, 8)]  # the newest five
    assert rows(fake_api, other_id) == ["o"]
    with fake_api.context.sessions() as session:
        assert session.get(Agent, agent_id).total_messages == 8  # every event was counted
        assert session.scalar(select(func.count()).select_from(WebhookEvent)) == 6


def test_the_default_limits(settings: Settings) -> None:
    assert (settings.rate_limit_webhook, settings.webhook_dedup_hours) == (120, 24.0)
