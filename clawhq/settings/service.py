"""ClawHQ's own process: where it listens, its database, its keys, its logs."""

from __future__ import annotations

import re
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from clawhq.setting_values import any_networks, decode_encryption_key


class ServiceSettings(BaseModel):
    env: Literal["development", "production"] = "development"
    data_dir: Path = Field(default_factory=lambda: Path.home() / ".local/share/clawhq")
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "database_url")
    )
    encryption_key: SecretStr | None = None
    encryption_keys_old: Annotated[tuple[SecretStr, ...], NoDecode] = ()

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    token_ttl_days: int = Field(default=30, ge=1)
    session_ttl_hours: float = Field(
        default=24.0, gt=0, le=24 * 90, description="hours a browser session cookie lasts"
    )
    public_url: str | None = Field(
        default=None,
        description="the origin browsers use to reach ClawHQ (default http://HOST:PORT); the "
        "agents' Control UI accepts only this origin",
    )
    trusted_proxies: Annotated[tuple[IPv4Network | IPv6Network, ...], NoDecode] = Field(
        default=(),
        description="reverse proxies whose X-Forwarded-For names the client (clawhq/clients.py)",
    )
    log_format: Literal["json", "text"] = "json"
    metrics_token: SecretStr | None = None

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _trusted_proxies(
        cls, value: str | tuple[IPv4Network | IPv6Network, ...]
    ) -> tuple[IPv4Network | IPv6Network, ...]:
        return any_networks(value) if isinstance(value, str) else tuple(value)

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

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        return http_url(value)


def http_url(value: str | None) -> str | None:
    """An http(s) base URL without its trailing slash; "" and None are no URL."""
    if value is None or value == "":
        return None
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError("must be an http(s) URL such as http://172.18.0.1:8000")
    return value.rstrip("/")
