"""The secrets a container is started with: its tokens and the channels' credentials.

They are new at every start (a new container's, and each start of the same one) and reach the
container as a file written into it just before the start, never in its env (``handover``).

No provider key ever enters a container: the agent gets a token for ClawHQ's LLM gateway,
which injects the real key (clawhq/llm/). Channel credentials are opened from their sealed
column only here, only while a container is being made.
"""

from __future__ import annotations

import json
import secrets

from sqlalchemy.orm import Session

from clawhq.controller.spec import AgentSecrets
from clawhq.credentials import LLM_TOKEN_PREFIX, WEBHOOK_TOKEN_PREFIX, new_token
from clawhq.crypto import Keyring, Sealed
from clawhq.db.models import Agent, User
from clawhq.errors import ClawHQError, PlanLimitExceeded, Unavailable
from clawhq.settings import Settings


def llm_access_problem(
    has_own_key: bool, bundled_keys_allowed: bool, model_provider: str, settings: Settings
) -> ClawHQError | None:
    """Why the agent's model calls would be refused for want of a key, or None."""
    if has_own_key:
        return None
    if not bundled_keys_allowed:
        return PlanLimitExceeded(
            "this agent has no API key of its own and your plan does not include "
            "ClawHQ's bundled keys: add an API key or upgrade your plan",
            code="bundled_keys_not_allowed",
        )
    if not settings.bundled_key(model_provider):
        return Unavailable(
            f"this ClawHQ has no bundled key for provider {model_provider!r}: "
            "add your own API key to the agent",
            code="bundled_key_unavailable",
        )
    return None


def check_api_key(session: Session, agent: Agent, settings: Settings) -> None:
    """Refuse, before anything changes, an agent that would start without a key."""
    user = session.get(User, agent.user_id)
    allowed = user is not None and user.plan.bundled_keys_allowed
    problem = llm_access_problem(agent.has_api_key, allowed, agent.model_provider, settings)
    if problem is not None:
        raise problem


def secrets_for(
    session: Session, agent: Agent, settings: Settings, keyring: Keyring
) -> AgentSecrets:
    """Fresh tokens for a new container (refused when the agent could not reach a model)."""
    check_api_key(session, agent, settings)
    return fresh_secrets(agent, keyring)


def fresh_secrets(agent: Agent, keyring: Keyring) -> AgentSecrets:
    """New tokens for one start of the agent's container, and its channels' credentials."""
    channel_env: dict[str, str] = {}
    if agent.channel_secrets_ciphertext is not None and agent.channel_secrets_key_id is not None:
        sealed = Sealed(agent.channel_secrets_ciphertext, agent.channel_secrets_key_id)
        channel_env = dict(json.loads(keyring.open(sealed, agent.channel_secrets_context)))
    return AgentSecrets(
        llm_token=new_token(LLM_TOKEN_PREFIX),
        webhook_token=new_token(WEBHOOK_TOKEN_PREFIX),
        gateway_password=secrets.token_urlsafe(32),
        proxy_identity=secrets.token_urlsafe(32),
        channel_env=channel_env,
    )
