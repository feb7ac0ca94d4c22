"""``POST /api/agents/{id}/webhook``: heartbeats and usage from agent containers."""

from __future__ import annotations

from fastapi import APIRouter

from clawhq.api.deps import BearerToken, DbSession, RateLimits, WebhookEvents
from clawhq.api.problems import problem_responses
from clawhq.api.routes.agents import AgentId
from clawhq.api.schemas import AgentEvent, Heartbeat, WebhookAck
from clawhq.services import webhooks

router = APIRouter(
    prefix="/api/agents", tags=["webhooks"], responses=problem_responses(400, 401, 422, 429, 503)
)


@router.post("/{agent_id}/webhook", response_model=WebhookAck)
def receive_event(
    agent_id: AgentId,
    event: AgentEvent,
    session: DbSession,
    credentials: BearerToken,
    limits: RateLimits,
    window: WebhookEvents,
) -> WebhookAck:
    """Authenticated with the agent's ``CLAWHQ_WEBHOOK_TOKEN``; usage counts once per eventId
    (remembered for ``CLAWHQ_WEBHOOK_DEDUP_HOURS``). ``CLAWHQ_RATE_LIMIT_WEBHOOK`` posts per
    agent a minute; beyond, 429 ``rate_limited`` and nothing is written."""
    token = credentials.credentials if credentials else None
    agent = webhooks.authenticate_agent(session, agent_id, token)
    # Charged once the token is known good, so nobody else can spend an agent's budget.
    limits.webhook.check(agent.id, "webhook posts")
    if isinstance(event, Heartbeat):
        webhooks.record_heartbeat(session, agent)
        return WebhookAck(accepted=True)
    counted = webhooks.record_usage(session, agent, event.event_id, event.messages, window)
    return WebhookAck(accepted=True, duplicate=not counted)
