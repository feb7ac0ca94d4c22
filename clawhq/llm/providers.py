"""The providers ClawHQ's LLM gateway speaks for: where each one's calls go, how its key is
sent, where its clients put theirs, and how it says no.

An agent's client sends its ClawHQ token wherever its provider's SDK sends a key; the gateway
takes it from there and sends the real key the way the provider expects it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from starlette.datastructures import Headers, QueryParams
from starlette.responses import Response

from clawhq.errors import LlmRefused
from clawhq.settings import Settings
from clawhq.settings.llm import LLM_PROVIDERS

#: Where the clients of the providers put a key: the gateway reads the agent's token from any.
KEY_HEADERS = ("x-api-key", "x-goog-api-key", "authorization")
KEY_QUERY = "key"


@dataclass(frozen=True)
class Provider:
    name: str  # as in /llm/<name>/
    model_provider: str  # an agent's model_provider for it (claude, openai, ...)
    #: The error format: ``anthropic``, ``openai`` (also DeepSeek's and xAI's) or ``google``.
    dialect: str

    def upstream(self, settings: Settings) -> str:
        return str(getattr(settings, f"llm_upstream_{self.name}"))

    def key_headers(self, key: str) -> list[tuple[str, str]]:
        """The headers that carry the real key to the provider."""
        if self.dialect == "anthropic":
            return [("x-api-key", key)]
        if self.dialect == "google":
            return [("x-goog-api-key", key)]
        return [("authorization", f"Bearer {key}")]


_DIALECTS = {"anthropic": "anthropic", "google": "google"}
PROVIDERS: Mapping[str, Provider] = {
    name: Provider(name, model_provider, _DIALECTS.get(name, "openai"))
    for model_provider, name in LLM_PROVIDERS.items()
}


def client_token(headers: Headers, query: QueryParams) -> str | None:
    """The token an agent's client sent, wherever its SDK puts a key."""
    for name in KEY_HEADERS:
        value = headers.get(name, "").strip()
        if name == "authorization":
            scheme, _, value = value.partition(" ")
            value = value.strip() if scheme.lower() == "bearer" else ""
        if value:
            return value
    return query.get(KEY_QUERY) or None


# -- errors in each provider's own format ----------------------------------------------------

#: A refusal's kind -> (Anthropic's error type, OpenAI's type, OpenAI's code, Google's status).
_KINDS: Mapping[str, tuple[str, str, str, str]] = {
    "authentication": (
        "authentication_error",
        "invalid_request_error",
        "invalid_api_key",
        "UNAUTHENTICATED",
    ),
    "permission": (
        "permission_error",
        "invalid_request_error",
        "permission_denied",
        "PERMISSION_DENIED",
    ),
    "invalid": (
        "invalid_request_error",
        "invalid_request_error",
        "invalid_request",
        "INVALID_ARGUMENT",
    ),
    "not_found": ("not_found_error", "invalid_request_error", "not_found", "NOT_FOUND"),
    "too_large": (
        "request_too_large",
        "invalid_request_error",
        "request_too_large",
        "INVALID_ARGUMENT",
    ),
    "rate_limit": ("rate_limit_error", "requests", "rate_limit_exceeded", "RESOURCE_EXHAUSTED"),
    "quota": ("rate_limit_error", "insufficient_quota", "insufficient_quota", "RESOURCE_EXHAUSTED"),
    "timeout": ("timeout_error", "timeout", "timeout", "DEADLINE_EXCEEDED"),
    "unavailable": ("api_error", "server_error", "upstream_unavailable", "UNAVAILABLE"),
}


def error_body(dialect: str, kind: str, status: int, message: str) -> dict[str, object]:
    anthropic, openai_type, openai_code, google = _KINDS[kind]
    if dialect == "anthropic":
        return {"type": "error", "error": {"type": anthropic, "message": message}}
    if dialect == "google":
        return {"error": {"code": status, "message": message, "status": google}}
    return {"error": {"message": message, "type": openai_type, "param": None, "code": openai_code}}


def refusal(provider: Provider, refused: LlmRefused) -> Response:
    """ClawHQ's answer instead of the provider's, shaped like the provider's own errors, so the
    agent's client shows it sensibly. ``X-ClawHQ-Error`` carries ClawHQ's stable code."""
    headers = {"x-clawhq-error": refused.code}
    if refused.retry_after is not None:
        headers["retry-after"] = str(refused.retry_after)
    body = error_body(provider.dialect, refused.kind, refused.status, refused.message)
    return Response(json.dumps(body), refused.status, headers, media_type="application/json")
