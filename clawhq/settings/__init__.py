"""All of ClawHQ's configuration, read from the environment in one place.

The settings are grouped by concern, one module each — the service itself (:mod:`.service`),
the engine and supervision (:mod:`.engine`), agent containers (:mod:`.agents`), limits
(:mod:`.limits`), the agent proxy (:mod:`.proxy`), the LLM gateway (:mod:`.llm`), the firewall
and egress (:mod:`.network`), workspace disks (:mod:`.disks`), backups (:mod:`.backups`) — and
combined in one :class:`Settings`. Field ``x`` is read from ``CLAWHQ_X`` unless an alias says
otherwise; every variable is documented in the README. Invalid values stop start-up with a
message that names the variable (:func:`load_settings`); unknown ``CLAWHQ_*`` variables are
named by :func:`unknown_settings`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from urllib.parse import urlsplit

from pydantic import AliasChoices, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from clawhq.errors import ConfigError
from clawhq.settings.agents import AgentSettings
from clawhq.settings.backups import BackupSettings
from clawhq.settings.disks import DiskSettings
from clawhq.settings.engine import EngineSettings
from clawhq.settings.limits import LimitSettings
from clawhq.settings.llm import PROVIDERS, LlmSettings
from clawhq.settings.names import ENV_PREFIX, unknown_variables
from clawhq.settings.network import DEFAULT_EGRESS_DENY, NetworkSettings
from clawhq.settings.proxy import ProxySettings
from clawhq.settings.service import ServiceSettings

__all__ = [
    "DEFAULT_EGRESS_DENY",
    "ENV_PREFIX",
    "PROVIDERS",
    "Settings",
    "env_name",
    "get_settings",
    "load_settings",
    "unknown_settings",
]


class Settings(
    ServiceSettings,
    EngineSettings,
    AgentSettings,
    LimitSettings,
    ProxySettings,
    LlmSettings,
    NetworkSettings,
    DiskSettings,
    BackupSettings,
    BaseSettings,
):
    """ClawHQ settings, every group in one frozen object."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", populate_by_name=True, frozen=True
    )

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
    def agent_origin_template(self) -> str:
        """``CLAWHQ_AGENT_ORIGIN``, else ``http://{agent}.agents.localhost:CLAWHQ_PORT``."""
        return self.agent_origin or f"http://{{agent}}.agents.localhost:{self.port}"

    def agent_origin_of(self, agent_id: str) -> str:
        """The browser origin the agent's own pages (its Control UI) are served on."""
        return self.agent_origin_template.replace("{agent}", agent_id.lower())


def env_name(field: str) -> str:
    """The environment variable that sets a settings field."""
    info = Settings.model_fields.get(field)
    if info is not None and isinstance(info.validation_alias, AliasChoices):
        first = info.validation_alias.choices[0]
        if isinstance(first, str):
            return first
    return f"{ENV_PREFIX}{field.upper()}"


def unknown_settings(environ: Mapping[str, str] | None = None) -> list[str]:
    """What to tell the operator about ``CLAWHQ_*`` variables no setting reads."""
    known = {env_name(field) for field in Settings.model_fields}
    return unknown_variables(os.environ if environ is None else environ, known)


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
