"""The secrets a container is started with: the LLM key and the channels' credentials.

They are opened from their sealed columns only here, only while a container is being made.
"""

from __future__ import annotations

import json
import secrets

from sqlalchemy.orm import Session

from clawhq.controller.spec import AgentSecrets
from clawhq.credentials import WEBHOOK_TOKEN_PREFIX, new_token
from clawhq.crypto import Keyring, Sealed
from clawhq.db.models import Agent, User
from clawhq.errors import PlanLimitExceeded, Unavailable
from clawhq.settings import Settings


def check_api_key(session: Session, agent: Agent, settings: Settings) -> None:
    """Refuse, before anything changes, an agent that would start without a key."""
    if agent.api_key_ciphertext is not None:
        return
    user = session.get(User, agent.user_id)
    if user is None or not user.plan.bundled_keys_allowed:
        raise PlanLimitExceeded(
            "this agent has no API key of its own and your plan does not include "
            "ClawHQ's bundled keys: add an API key or upgrade your plan",
            code="bundled_keys_not_allowed",
        )
    if not settings.bundled_key(agent.model_provider):
        raise Unavailable(
            f"this ClawHQ has no bundled key for provider {agent.model_provider!r}: "
            "add your own API key to the agent",
            code="bundled_key_unavailable",
        )


def secrets_for(
    session: Session, agent: Agent, settings: Settings, keyring: Keyring
) -> AgentSecrets:
    """Fresh tokens for a new container, and the agent's own key or the bundled one."""
    check_api_key(session, agent, settings)
    if agent.api_key_ciphertext is not None and agent.api_key_key_id is not None:
        sealed = Sealed(agent.api_key_ciphertext, agent.api_key_key_id)
        api_key = keyring.open(sealed, agent.api_key_context)
    else:
        api_key = str(settings.bundled_key(agent.model_provider))
    channel_env: dict[str, str] = {}
    if agent.channel_secrets_ciphertext is not None and agent.channel_secrets_key_id is not None:
        sealed = Sealed(agent.channel_secrets_ciphertext, agent.channel_secrets_key_id)
        channel_env = dict(json.loads(keyring.open(sealed, agent.channel_secrets_context)))
    return AgentSecrets(
        api_key=api_key,
        webhook_token=new_token(WEBHOOK_TOKEN_PREFIX),
        gateway_password=secrets.token_urlsafe(32),
        proxy_identity=secrets.token_urlsafe(32),
        channel_env=channel_env,
    )
