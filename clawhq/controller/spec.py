"""How an agent and the settings become a hardened container spec, and what drifted. Pure.

The spec is the agent's intended container. Its hash (secrets left out) is stamped on the
container as ``clawhq.config-hash``; a container whose hash differs from the spec's is out of
date. :func:`summary` is the same spec as plain data without secrets, kept on the agent row
when its container is created, so the API can say *what* differs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from clawhq.runtime import ContainerSpec, Limits, PortBinding, labels
from clawhq.settings import Settings
from clawhq.settings.llm import LLM_PROVIDERS

AGENT_UID_GID = "1001:1001"
#: Channel credentials arrive under the names the agent image reads (see docker/openclaw/).
CHANNEL_ENV_NAMES: Mapping[str, tuple[str, ...]] = {
    "telegram": ("TELEGRAM_BOT_TOKEN",),
    "discord": ("DISCORD_BOT_TOKEN",),
    "slack": ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN"),
}
CHANNEL_ENV = frozenset(name for names in CHANNEL_ENV_NAMES.values() for name in names)
SECRET_ENV = frozenset(
    {
        "CLAWHQ_API_KEY",
        "CLAWHQ_WEBHOOK_TOKEN",
        "CLAWHQ_PROXY_IDENTITY",
        "OPENCLAW_GATEWAY_PASSWORD",
        *CHANNEL_ENV,
    }
)
#: A plan's egress policies: ``open`` (any public address), ``allowlist`` (out only through
#: ClawHQ's forward proxy) and ``none`` (ClawHQ only). See docs/egress.md.
EGRESS_POLICIES = ("open", "allowlist", "none")
#: Labels that say which start a container belongs to, not what it is.
ATTEMPT_LABEL = labels.START
#: The secrets file's name on the workspace volume (:func:`secrets_path`).
SECRETS_FILE_NAME = ".clawhq-secrets.json"
PLACEHOLDER = "<secret>"


class AgentFields(Protocol):
    """What the spec needs of an agent (an ORM row or a plain record)."""

    @property
    def id(self) -> str: ...
    @property
    def user_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def model_provider(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def channels(self) -> Sequence[str] | None: ...


@dataclass(frozen=True)
class AgentSecrets:
    """Secrets handed to one start of a container, in its secrets file (never in its env);
    nowhere in plaintext at rest."""

    #: The container's token for ClawHQ's LLM gateway (never a provider key).
    llm_token: str
    webhook_token: str
    #: For the agent's own processes inside the container (its usage reporter); never leaves it.
    gateway_password: str
    #: What ClawHQ's proxy proves itself with to this container's gateway (docs/agent-access.md).
    proxy_identity: str = PLACEHOLDER
    channel_env: Mapping[str, str] = field(default_factory=dict)


#: Stand-ins for the secrets when only the spec's shape and hash are wanted.
NO_SECRETS = AgentSecrets(PLACEHOLDER, PLACEHOLDER, PLACEHOLDER)


@dataclass(frozen=True)
class Placement:
    """Where the agent's container is reached from: what every spec of one ClawHQ shares."""

    webhook_base_url: str
    instance_id: str
    #: The address ClawHQ's proxy connects to agents from (the agent network's gateway).
    proxy_address: str = ""
    #: The egress network's gateway: ClawHQ's address for agents whose egress is restricted
    #: (where its forward proxy listens, and where its connections to them come from).
    egress_gateway: str = ""


def container_name(user_id: str, agent_id: str) -> str:
    return f"clawhq-{user_id}-{agent_id}"


def volume_name(agent_id: str) -> str:
    return f"clawhq-workspace-{agent_id}"


def webhook_url(base_url: str, agent_id: str) -> str:
    return f"{base_url}/api/agents/{agent_id}/webhook"


def llm_base_url(base_url: str, model_provider: str) -> str:
    """Where the agent's gateway sends its model calls: ClawHQ's LLM gateway for its provider."""
    return f"{base_url}/llm/{LLM_PROVIDERS.get(model_provider, model_provider)}"


def access_path(agent_id: str) -> str:
    """The path prefix under which ClawHQ serves the agent's gateway to its owner."""
    return f"/agents/{agent_id}"


def agent_disk(settings: Settings, plan_disk: int | None) -> int | None:
    """The cap of the agent's workspace: its plan's, else ``CLAWHQ_AGENT_DISK`` (None: none)."""
    return plan_disk or settings.agent_disk


def agent_image(settings: Settings, pinned: str | None, plan_image: str | None) -> str:
    """The agent's own pin, else its plan's, else ``CLAWHQ_AGENT_IMAGE``."""
    return pinned or plan_image or settings.agent_image


def build_spec(
    settings: Settings,
    agent: AgentFields,
    port: int,
    secrets: AgentSecrets,
    placement: Placement,
    *,
    image: str | None = None,
    egress: str = "open",
    disk: int | None = None,
) -> ContainerSpec:
    """The container for ``agent``: every limit and hardening option comes from here.

    No secret is in it: ``secrets`` are not read here (the signature keeps them for callers).
    ClawHQ writes them into the container before each start (:func:`secrets_file`, at the
    path its env's ``CLAWHQ_SECRETS_FILE`` and its ``clawhq.secrets-file`` label name), and
    the image reads and removes the file before any agent code runs.

    ``egress`` is the owner's plan's policy: an agent under ``allowlist`` or ``none`` joins
    the egress network, whose firewall lets it reach ClawHQ alone, and its lookups go nowhere
    (:func:`egress_dns`); under ``allowlist`` it is told where ClawHQ's forward proxy is.
    """
    restricted = egress != "open"
    proxy_address = placement.egress_gateway if restricted else placement.proxy_address
    channels = list(agent.channels or [])
    env = {
        "HOME": settings.agent_workspace_path,
        "CLAWHQ_USER_ID": agent.user_id,
        "CLAWHQ_AGENT_ID": agent.id,
        "CLAWHQ_AGENT_NAME": agent.name,
        "CLAWHQ_MODEL_PROVIDER": agent.model_provider,
        "CLAWHQ_MODEL": agent.model,
        "CLAWHQ_LLM_BASE_URL": llm_base_url(placement.webhook_base_url, agent.model_provider),
        "CLAWHQ_CHANNELS": json.dumps(channels),
        "CLAWHQ_WEBHOOK_URL": webhook_url(placement.webhook_base_url, agent.id),
        "CLAWHQ_PROXY_ADDRESSES": proxy_address,
        # The origin its Control UI is served on: the agent's own (CLAWHQ_AGENT_ORIGIN).
        "CLAWHQ_PUBLIC_ORIGIN": settings.agent_origin_of(agent.id),
        "CLAWHQ_BASE_PATH": access_path(agent.id),
        "CLAWHQ_SECRETS_FILE": secrets_path(settings),
        **egress_env(settings, placement, egress),
    }
    published = PortBinding(str(settings.agent_bind_ip), port, settings.agent_internal_port)
    return ContainerSpec(
        name=container_name(agent.user_id, agent.id),
        hostname=f"agent-{agent.id[:12]}",
        image=image or settings.agent_image,
        env=env,
        secret_env=SECRET_ENV,
        labels={
            labels.SERVICE: labels.SERVICE_AGENT,
            labels.USER_ID: agent.user_id,
            labels.AGENT_ID: agent.id,
            labels.INSTANCE: placement.instance_id,
            labels.SECRETS_FILE: secrets_path(settings),
        },
        user=AGENT_UID_GID,
        limits=Limits(
            memory_bytes=settings.agent_memory,
            cpu_quota=settings.agent_cpu_quota,
            cpu_period=settings.agent_cpu_period,
            pids_limit=settings.agent_pids_limit,
        ),
        port=published if settings.agent_publish_ports else None,
        network=settings.egress_network if restricted else settings.agent_network,
        volume=volume_name(agent.id),
        volume_path=settings.agent_workspace_path,
        log_max_size=settings.agent_log_max_size,
        log_max_files=settings.agent_log_max_files,
        disk_bytes=disk,
        dns=egress_dns(placement, egress),
    )


def egress_env(settings: Settings, placement: Placement, egress: str) -> dict[str, str]:
    """What the container is told of its egress (nothing under ``open``: specs and hashes of
    agents on open plans stay what they were)."""
    if egress == "open":
        return {}
    env = {"CLAWHQ_EGRESS_POLICY": egress}
    if egress == "allowlist":
        proxy = f"http://{placement.egress_gateway}:{settings.egress_proxy_port}"
        env["CLAWHQ_EGRESS_PROXY"] = proxy
    return env


def egress_dns(placement: Placement, egress: str) -> tuple[str, ...]:
    """Where the container's lookups go under a restricted policy: the egress network's
    gateway, whose port 53 that network's firewall rejects. Its embedded resolver then forwards
    no name anywhere: not to the host's resolvers (Docker's default, which a resolver on the
    host's loopback would reach from the host itself, past every rule of the agent bridge),
    and nothing answers what it asks (docs/egress.md, "DNS")."""
    if egress == "open" or not placement.egress_gateway:
        return ()
    return (placement.egress_gateway,)


def secrets_path(settings: Settings) -> str:
    """Where a container's secrets file goes: on its workspace volume (its root is read-only),
    a fixed name (the agent cannot read it: it is gone before any agent code runs)."""
    return f"{settings.agent_workspace_path.rstrip('/')}/{SECRETS_FILE_NAME}"


def secrets_file(agent: AgentFields, secrets: AgentSecrets) -> bytes:
    """The secrets file of one start: a JSON object, the image's names for the secrets
    (docker/openclaw/entrypoint.mjs, ``CLAWHQ_SECRETS_FILE``) -> their values."""
    values = {
        "CLAWHQ_API_KEY": secrets.llm_token,
        "CLAWHQ_WEBHOOK_TOKEN": secrets.webhook_token,
        "OPENCLAW_GATEWAY_PASSWORD": secrets.gateway_password,
        "CLAWHQ_PROXY_IDENTITY": secrets.proxy_identity,
        **{
            name: secrets.channel_env.get(name, PLACEHOLDER)
            for channel in agent.channels or []
            for name in CHANNEL_ENV_NAMES.get(channel, ())
        },
    }
    return json.dumps(values).encode()


def with_attempt(spec: ContainerSpec, attempt: int) -> ContainerSpec:
    """The spec labelled with the start it belongs to (left out of the hash)."""
    from dataclasses import replace

    return replace(spec, labels={**spec.labels, ATTEMPT_LABEL: str(attempt)})


def summary(spec: ContainerSpec, image_id: str = "") -> dict[str, Any]:
    """The spec as plain data with no secret in it: what the API shows of drift."""
    data = asdict(spec)
    data["env"] = {k: v for k, v in spec.env.items() if k not in spec.secret_env}
    data["labels"] = {
        k: v for k, v in spec.labels.items() if k not in (labels.CONFIG_HASH, ATTEMPT_LABEL)
    }
    data.pop("secret_env")
    data.pop("disk_bytes")  # the workspace's, not the container's (see ContainerSpec)
    if spec.dns:
        data["dns"] = list(spec.dns)  # as it reads back from the stored JSON
    else:  # as in the hash: agents on open plans show what they always did
        data.pop("dns")
    data["config_hash"] = spec.config_hash()
    data["image_id"] = image_id
    return data


def differences(intended: Mapping[str, Any], applied: Mapping[str, Any] | None) -> list[str]:
    """Which parts of the spec differ, as dotted names (``image``, ``env.CLAWHQ_MODEL``…)."""
    if applied is None:
        return ["(created by an earlier ClawHQ)"]
    found: list[str] = []
    for key in sorted(set(intended) | set(applied)):
        if key == "config_hash":
            continue
        mine, theirs = intended.get(key), applied.get(key)
        if key == "image_id" and (not mine or not theirs):
            continue  # unknown on one side: nothing to say
        if isinstance(mine, dict) and isinstance(theirs, dict):
            found += [
                f"{key}.{sub}"
                for sub in sorted(set(mine) | set(theirs))
                if mine.get(sub) != theirs.get(sub)
            ]
        elif mine != theirs:
            found.append(key)
    return found
