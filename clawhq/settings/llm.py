"""The LLM gateway: bundled provider keys, upstreams and bounds (docs/llm-gateway.md)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from pydantic import BaseModel, Field, SecretStr, field_validator

from clawhq.setting_values import parse_size

#: An agent's model provider (as ClawHQ names it) -> its path on ClawHQ's LLM gateway,
#: ``/llm/<name>/``: the provider's own name for itself.
LLM_PROVIDERS: Mapping[str, str] = {
    "claude": "anthropic",
    "openai": "openai",
    "gemini": "google",
    "deepseek": "deepseek",
    "grok": "xai",
}
PROVIDERS = tuple(LLM_PROVIDERS)


class LlmSettings(BaseModel):
    claude_api_key: SecretStr | None = None
    openai_api_key: SecretStr | None = None
    gemini_api_key: SecretStr | None = None
    deepseek_api_key: SecretStr | None = None
    grok_api_key: SecretStr | None = None

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

    llm_unmetered_charge: int = Field(
        default=65_536,
        ge=0,
        description="output tokens charged, besides the request's size / 4, for a successful "
        "answer that reports no usage when the request sets no max_tokens",
    )

    @field_validator("llm_max_body", mode="before")
    @classmethod
    def _llm_body(cls, value: str | int) -> int:
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

    def bundled_key(self, provider: str) -> str | None:
        """The operator's bundled API key for a provider, if one is configured."""
        secret: SecretStr | None = getattr(self, f"{provider}_api_key", None)
        return secret.get_secret_value() if secret else None
