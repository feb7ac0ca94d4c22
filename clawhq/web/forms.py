"""Forms checked by the API's own request schemas, so a page says what the API would say.

:func:`validate` gives the very ``detail`` the API answers a bad JSON body with
(``invalid request: apiKey: String should have at least 8 characters``), and each field's
message for the form to show beside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from clawhq.api.schemas import AgentCreate

M = TypeVar("M", bound=BaseModel)


class FormError(Exception):
    """A form the schema refused: the API's summary, and each field's message."""

    def __init__(self, summary: str, fields: dict[str, str]) -> None:
        super().__init__(summary)
        self.summary = summary
        self.fields = fields


def _field(loc: tuple[Any, ...]) -> str:
    # As the API names a field: the body's own path (a model-wide rule is "body").
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or str(loc[0] if loc else "request")


def validate(model: type[M], data: Mapping[str, Any]) -> M:
    """``data`` (JSON-like, camelCase) as ``model``, or :class:`FormError`."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        errors = [
            (
                _field(("body", *e.get("loc", ()))),
                str(e.get("msg", "invalid")).removeprefix("Value error, "),
            )
            for e in exc.errors()
        ]
        summary = "; ".join(f"{name}: {message}" for name, message in errors)
        fields: dict[str, str] = {}
        for name, message in errors:
            fields.setdefault(name, message)
        raise FormError(f"invalid request: {summary}", fields) from None


CHANNELS = ("telegram", "discord", "slack", "whatsapp")
CHANNEL_NAMES = {
    "telegram": "Telegram",
    "discord": "Discord",
    "slack": "Slack",
    "whatsapp": "WhatsApp",
}
#: Each channel's credential fields: (form field, JSON name, label).
CHANNEL_FIELDS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "telegram": (("telegram_bot_token", "botToken", "Telegram bot token (from @BotFather)"),),
    "discord": (("discord_bot_token", "botToken", "Discord bot token"),),
    "slack": (
        ("slack_bot_token", "botToken", "Slack bot token (xoxb-…)"),
        ("slack_app_token", "appToken", "Slack app token (xapp-…, socket mode)"),
    ),
    "whatsapp": (),
}


def agent_body(values: Mapping[str, list[str]]) -> dict[str, Any]:
    """The JSON body ``POST /api/agents`` would get from the new-agent form.

    The key: ``keySource`` ``own`` sends ``apiKey`` (blank: left out, so the API's own rule
    says what is missing), ``bundled`` sends ``usesBundledApi: true``. A channel's credentials
    go with it only when it is ticked and they are filled in.
    """

    def first(name: str) -> str:
        found = values.get(name)
        return found[0] if found else ""

    body: dict[str, Any] = {
        "name": first("name"),
        "modelProvider": first("modelProvider") or "claude",
        "model": first("model").strip() or "claude-sonnet-4-20250514",
    }
    if first("keySource") == "bundled":
        body["usesBundledApi"] = True
    elif key := first("apiKey"):
        body["apiKey"] = key
    channels = [c for c in CHANNELS if c in values.get("channels", [])]
    body["channels"] = channels
    credentials: dict[str, dict[str, str]] = {}
    for channel in channels:
        given = {json: first(field).strip() for field, json, _ in CHANNEL_FIELDS[channel]}
        if given and any(given.values()):
            credentials[channel] = given
    body["channelCredentials"] = credentials
    return body


def check_agent(values: Mapping[str, list[str]]) -> AgentCreate:
    return validate(AgentCreate, agent_body(values))
