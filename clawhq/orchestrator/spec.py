"""How an agent row and the settings become a hardened container spec. Pure: no I/O."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from clawhq.db.models import Agent
from clawhq.runtime import ContainerSpec, Limits, PortBinding, labels
from clawhq.settings import Settings

AGENT_UID_GID = "1001:1001"
#: Channel credentials arrive under the names the agent image reads (see docker/openclaw/).
CHANNEL_ENV = frozenset(
    {"TELEGRAM_BOT_TOKEN", "DISCORD_BOT_TOKEN", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN"}
)
SECRET_ENV = frozenset(
    {"CLAWHQ_API_KEY", "CLAWHQ_WEBHOOK_TOKEN", "OPENCLAW_GATEWAY_TOKEN", *CHANNEL_ENV}
)


@dataclass(frozen=True)
class AgentSecrets:
    """Secrets handed to one container; they live in its env and nowhere in plaintext at rest."""

    api_key: str
    webhook_token: str
    gateway_token: str
    channel_env: Mapping[str, str] = field(default_factory=dict)


def container_name(user_id: str, agent_id: str) -> str:
    return f"clawhq-{user_id}-{agent_id}"


def volume_name(agent_id: str) -> str:
    return f"clawhq-workspace-{agent_id}"


def webhook_url(base_url: str, agent_id: str) -> str:
    return f"{base_url}/api/agents/{agent_id}/webhook"


def build_spec(
    settings: Settings,
    agent: Agent,
    port: int,
    secrets: AgentSecrets,
    webhook_base_url: str,
    instance_id: str,
) -> ContainerSpec:
    """The container for ``agent``: every limit and hardening option comes from here."""
    env = {
        "HOME": settings.agent_workspace_path,
        "CLAWHQ_USER_ID": agent.user_id,
        "CLAWHQ_AGENT_ID": agent.id,
        "CLAWHQ_AGENT_NAME": agent.name,
        "CLAWHQ_MODEL_PROVIDER": agent.model_provider,
        "CLAWHQ_MODEL": agent.model,
        "CLAWHQ_API_KEY": secrets.api_key,
        "CLAWHQ_CHANNELS": json.dumps(list(agent.channels or [])),
        "CLAWHQ_WEBHOOK_URL": webhook_url(webhook_base_url, agent.id),
        "CLAWHQ_WEBHOOK_TOKEN": secrets.webhook_token,
        "OPENCLAW_GATEWAY_TOKEN": secrets.gateway_token,
        **{k: v for k, v in secrets.channel_env.items() if k in CHANNEL_ENV},
    }
    return ContainerSpec(
        name=container_name(agent.user_id, agent.id),
        image=settings.agent_image,
        env=env,
        secret_env=SECRET_ENV,
        labels={
            labels.SERVICE: labels.SERVICE_AGENT,
            labels.USER_ID: agent.user_id,
            labels.AGENT_ID: agent.id,
            labels.INSTANCE: instance_id,
        },
        user=AGENT_UID_GID,
        limits=Limits(
            memory_bytes=settings.agent_memory,
            cpu_quota=settings.agent_cpu_quota,
            cpu_period=settings.agent_cpu_period,
            pids_limit=settings.agent_pids_limit,
        ),
        port=PortBinding(str(settings.agent_bind_ip), port, settings.agent_internal_port),
        network=settings.agent_network,
        volume=volume_name(agent.id),
        volume_path=settings.agent_workspace_path,
        log_max_size=settings.agent_log_max_size,
        log_max_files=settings.agent_log_max_files,
    )
