"""All of ClawHQ's configuration, read from the environment in one place.

Every variable is documented in the README. Invalid values stop start-up with a message that
names the environment variable (see :func:`load_settings`).
"""

from __future__ import annotations

import re
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Network, IPv6Network
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from clawhq.errors import ConfigError
from clawhq.setting_values import (
    any_networks,
    decode_encryption_key,
    host_patterns,
    networks,
    parse_size,
)

ENV_PREFIX = "CLAWHQ_"
PROVIDERS = ("claude", "openai", "gemini", "deepseek", "grok")
# Private ranges agents may not open connections to (besides link-local/metadata, always).
DEFAULT_EGRESS_DENY = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10"


class Settings(BaseSettings):
    """ClawHQ settings. Field ``x`` is read from ``CLAWHQ_X`` unless an alias says otherwise."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", populate_by_name=True, frozen=True
    )

    env: Literal["development", "production"] = "development"
    data_dir: Path = Field(default_factory=lambda: Path.home() / ".local/share/clawhq")
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "database_url")
    )
    docker_host: str | None = Field(
        default=None, validation_alias=AliasChoices("DOCKER_HOST", "docker_host")
    )
    encryption_key: SecretStr | None = None

    claude_api_key: SecretStr | None = None
    openai_api_key: SecretStr | None = None
    gemini_api_key: SecretStr | None = None
    deepseek_api_key: SecretStr | None = None
    grok_api_key: SecretStr | None = None

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    token_ttl_days: int = Field(default=30, ge=1)

    agent_image: str = "clawhq-openclaw:latest"
    # An idle gateway holds ~850 MiB; its first agent turn is OOM-killed under 1 GiB
    # (docs/openclaw-image.md).
    agent_memory: int = Field(default=parse_size("2g"))
    agent_cpu_quota: int = Field(default=50_000, ge=1_000)
    agent_cpu_period: int = Field(default=100_000, ge=1_000, le=1_000_000)
    agent_pids_limit: int = Field(default=256, ge=16)
    agent_log_max_size: str = "10m"
    agent_log_max_files: int = Field(default=3, ge=1, le=100)
    agent_network: str = "clawhq-agents"
    agent_egress_deny: Annotated[tuple[IPv4Network, ...], NoDecode] = Field(
        default_factory=lambda: networks(DEFAULT_EGRESS_DENY)
    )
    firewall: Literal["auto", "off"] = "auto"
    agent_workspace_path: str = "/home/openclaw"
    agent_bind_ip: IPv4Address = IPv4Address("127.0.0.1")
    agent_internal_port: int = Field(default=18789, ge=1, le=65535)
    agent_health_path: str = "/healthz"
    port_range: Annotated[tuple[int, int], NoDecode] = (19000, 19999)

    health_interval: float = Field(default=30.0, gt=0)
    start_timeout: float = Field(default=120.0, gt=0)
    startup_poll_interval: float = Field(default=0.5, gt=0)
    stop_timeout: int = Field(default=10, ge=0, le=600)
    health_failure_threshold: int = Field(default=3, ge=1)
    restart_backoff_initial: float = Field(default=10.0, ge=0)
    restart_backoff_max: float = Field(default=300.0, ge=0)
    restart_backoff_reset: float = Field(default=600.0, ge=0)
    reconcile_interval: float = Field(default=60.0, gt=0)
    max_deploys_in_flight: int = Field(default=20, ge=1)
    supervise: bool = True
    rate_limit_auth: int = Field(default=10, ge=1, description="login/register per IP a minute")
    rate_limit_user: int = Field(default=600, ge=1, description="requests per user a minute")
    rate_limit_webhook: int = Field(
        default=120, ge=1, description="webhook posts per agent a minute"
    )
    rate_limit_register: int = Field(
        default=5, ge=1, description="accounts registered per IP an hour"
    )
    rate_limit_login_account: int = Field(
        default=20, ge=1, description="failed logins per account (email) an hour"
    )
    trusted_proxies: Annotated[tuple[IPv4Network | IPv6Network, ...], NoDecode] = Field(
        default=(),
        description="reverse proxies whose X-Forwarded-For names the client (clawhq/clients.py)",
    )
    max_users: int = Field(default=0, ge=0, description="accounts that may register (0: no cap)")
    stopped_lease_hours: float = Field(
        default=24.0,
        ge=0,
        description="hours a stopped agent keeps its port (0: for ever); then its container "
        "goes (the workspace stays) and it gets a new port on start",
    )
    streams_per_user: int = Field(
        default=5, ge=1, description="Server-Sent Event streams one user may hold open"
    )
    streams_total: int = Field(
        default=200, ge=1, description="Server-Sent Event streams open at once in all"
    )
    stream_max_seconds: float = Field(
        default=3600.0, gt=0, description="the longest a stream lives before it ends"
    )
    max_connections: int = Field(
        default=1000, ge=1, description="connections `clawhq serve` takes at once (503 beyond)"
    )
    webhook_dedup_hours: float = Field(
        default=24.0, gt=0, le=24 * 365, description="hours a usage eventId is remembered"
    )
    encryption_keys_old: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    stats_interval: float = Field(default=60.0, ge=0)
    log_format: Literal["json", "text"] = "json"
    metrics_token: SecretStr | None = None
    webhook_base_url: str | None = None

    # Agent access: users reach their agent's gateway through ClawHQ (docs/agent-access.md).
    public_url: str | None = Field(
        default=None,
        description="the origin browsers use to reach ClawHQ (default http://HOST:PORT); the "
        "agents' Control UI accepts only this origin",
    )
    agent_publish_ports: bool = Field(
        default=True,
        description="also publish each agent's gateway on a host port from the pool; ClawHQ "
        "itself reaches agents over the agent network either way",
    )
    session_ttl_hours: float = Field(
        default=24.0, gt=0, le=24 * 90, description="hours a browser session cookie lasts"
    )
    proxy_connections_per_user: int = Field(
        default=20, ge=1, description="proxied connections to agents one user may hold open"
    )
    proxy_connections_total: int = Field(
        default=500, ge=1, description="proxied connections to agents open at once in all"
    )
    proxy_idle_seconds: float = Field(
        default=300.0, gt=0, description="seconds a proxied connection may carry nothing"
    )
    proxy_max_message: int = Field(
        default=parse_size("16m"),
        description="the largest WebSocket message or request body the proxy passes on",
    )
    proxy_timeout: float = Field(
        default=300.0,
        gt=0,
        description="seconds to wait for an agent's gateway to start answering (504 beyond); "
        "a chat turn that is not streamed answers only when it is done",
    )

    # The LLM gateway: agents reach their model provider through ClawHQ (docs/llm-gateway.md).
    llm_upstream_anthropic: str = Field(
        default="https://api.anthropic.com", description="where /llm/anthropic/ calls go"
    )
    llm_upstream_openai: str = Field(
        default="https://api.openai.com", description="where /llm/openai/ calls go"
    )
    llm_upstream_google: str = Field(
        default="https://generativelanguage.googleapis.com",
        description="where /llm/google/ calls go",
    )
    llm_upstream_deepseek: str = Field(
        default="https://api.deepseek.com", description="where /llm/deepseek/ calls go"
    )
    llm_upstream_xai: str = Field(
        default="https://api.x.ai", description="where /llm/xai/ calls go"
    )
    llm_timeout: float = Field(
        default=600.0,
        gt=0,
        description="seconds to wait for a provider to start answering, and between two "
        "pieces of a streamed answer (504 beyond)",
    )
    llm_max_body: int = Field(
        default=parse_size("32m"), description="the largest request body an agent may send"
    )
    llm_calls_per_agent: int = Field(
        default=16, ge=1, description="model calls one agent may have in flight at once"
    )

    # Workspace disks: each workspace is a filesystem of its own, capped (docs/disks.md).
    agent_disk: int | None = Field(
        default=parse_size("2g"),
        description="the size of each agent's workspace filesystem, writes past it fail with "
        "ENOSPC in that agent only (a plan may set its own; off: no cap)",
    )
    disk_dir: Path = Field(
        default=Path("/var/lib/clawhq/disks"),
        description="where the workspace filesystem images live (on the disk they may fill)",
    )

    # Egress: plans whose policy is allowlist or none reach out only through ClawHQ
    # (docs/egress.md).
    egress_allow: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="hosts agents under the allowlist policy may reach through ClawHQ's "
        "forward proxy, besides their channels' chat platforms",
    )
    egress_proxy_port: int = Field(
        default=8002, ge=1, le=65535, description="the port of ClawHQ's forward proxy for agents"
    )
    egress_network: str = Field(
        default="clawhq-agents-egress",
        description="the agent network of plans whose egress policy is allowlist or none",
    )

    @field_validator("agent_memory", mode="before")
    @classmethod
    def _memory(cls, value: str | int) -> int:
        size = parse_size(value)
        if size < 6 * 1024**2:
            raise ValueError("must be at least 6m (Docker's minimum)")
        return size

    @field_validator("agent_disk", mode="before")
    @classmethod
    def _disk(cls, value: str | int | None) -> int | None:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("off", "")):
            return None
        size = parse_size(value)
        if size < 16 * 1024**2:
            raise ValueError("must be at least 16m (or off)")
        return size

    @field_validator("egress_allow", mode="before")
    @classmethod
    def _egress_allow(cls, value: str | tuple[str, ...]) -> tuple[str, ...]:
        return host_patterns(value if isinstance(value, str) else ",".join(value))

    @field_validator("agent_egress_deny", mode="before")
    @classmethod
    def _egress_deny(cls, value: str | tuple[IPv4Network, ...]) -> tuple[IPv4Network, ...]:
        return networks(value) if isinstance(value, str) else tuple(value)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _trusted_proxies(
        cls, value: str | tuple[IPv4Network | IPv6Network, ...]
    ) -> tuple[IPv4Network | IPv6Network, ...]:
        return any_networks(value) if isinstance(value, str) else tuple(value)

    @field_validator("agent_log_max_size")
    @classmethod
    def _log_size(cls, value: str) -> str:
        parse_size(value)
        return value

    @field_validator("port_range", mode="before")
    @classmethod
    def _port_range(cls, value: str | tuple[int, int]) -> tuple[int, int]:
        if isinstance(value, str):
            parts = value.split("-")
            if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
                raise ValueError("must look like 19000-19999")
            value = (int(parts[0]), int(parts[1]))
        low, high = value
        if not 1024 <= low <= high <= 65535:
            raise ValueError("must be LOW-HIGH with 1024 <= LOW <= HIGH <= 65535")
        return (low, high)

    @field_validator("agent_health_path")
    @classmethod
    def _health_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with /")
        return value

    @field_validator("encryption_key")
    @classmethod
    def _key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value():
            decode_encryption_key(value.get_secret_value())
            return value
        return None

    @field_validator("encryption_keys_old", mode="before")
    @classmethod
    def _old_keys(cls, value: str | tuple[str, ...]) -> tuple[str, ...]:
        if isinstance(value, str):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        for key in value:
            decode_encryption_key(key.get_secret_value() if isinstance(key, SecretStr) else key)
        return tuple(value)

    @field_validator("proxy_max_message", "llm_max_body", mode="before")
    @classmethod
    def _proxy_size(cls, value: str | int) -> int:
        return parse_size(value)

    @field_validator(
        "llm_upstream_anthropic",
        "llm_upstream_openai",
        "llm_upstream_google",
        "llm_upstream_deepseek",
        "llm_upstream_xai",
    )
    @classmethod
    def _upstream(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s?#]+(/[^\s?#]*)?$", value):
            raise ValueError("must be an http(s) URL without query, such as https://api.x.ai")
        return value.rstrip("/")

    @field_validator("webhook_base_url", "public_url")
    @classmethod
    def _webhook(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http(s) URL such as http://172.18.0.1:8000")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _production_needs_key(self) -> Settings:
        if self.env == "production" and self.encryption_key is None:
            raise ValueError(
                f"{ENV_PREFIX}ENCRYPTION_KEY is required when {ENV_PREFIX}ENV=production "
                "(run `clawhq keys generate`)"
            )
        return self

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file in the data dir."""
        return self.database_url or f"sqlite:///{self.data_dir / 'clawhq.db'}"

    @property
    def public_origin(self) -> str:
        """``scheme://host[:port]`` browsers reach ClawHQ at (no path, no trailing slash)."""
        if self.public_url:
            parts = urlsplit(self.public_url)
            return f"{parts.scheme}://{parts.netloc}"
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def port_count(self) -> int:
        return self.port_range[1] - self.port_range[0] + 1

    def bundled_key(self, provider: str) -> str | None:
        """The operator's bundled API key for a provider, if one is configured."""
        secret: SecretStr | None = getattr(self, f"{provider}_api_key", None)
        return secret.get_secret_value() if secret else None


def env_name(field: str) -> str:
    """The environment variable that sets a settings field."""
    info = Settings.model_fields.get(field)
    if info is not None and isinstance(info.validation_alias, AliasChoices):
        first = info.validation_alias.choices[0]
        if isinstance(first, str):
            return first
    return f"{ENV_PREFIX}{field.upper()}"


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment (plus overrides), translating errors to env names."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = error["loc"]
            name = env_name(str(loc[0])) if loc else "configuration"
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{name}: {message}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from None
    except SettingsError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests build their own with :func:`load_settings`)."""
    return load_settings()
