"""Request and response bodies, named by role. JSON uses camelCase field names."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic.alias_generators import to_camel

from clawhq.settings import PROVIDERS
from clawhq.status import AgentStatus, DesiredState

Provider = Literal["claude", "openai", "gemini", "deepseek", "grok"]
Channel = Literal["telegram", "discord", "slack", "whatsapp"]
assert set(Provider.__args__) == set(PROVIDERS)  # type: ignore[attr-defined]

AgentName = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        min_length=1,
        max_length=64,
        # Something besides spaces (stripped, " " would be empty), and no control characters.
        pattern=r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$",
    ),
]
ModelName = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:/@-]+$")
]
#: Printable ASCII without spaces: ``\S`` means other things in JSON Schema's regex dialect
#: and in the validator's (U+0085, say), and no provider's key needs more than ASCII.
ApiKey = Annotated[str, StringConstraints(min_length=8, max_length=512, pattern=r"^[!-~]+$")]
Password = Annotated[str, StringConstraints(min_length=8, max_length=256)]


def _json_integer(value: object) -> object:
    """JSON Schema counts 5.0 as an integer; strict validation would not. Strings stay refused."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


JsonInt = Annotated[int, BeforeValidator(_json_integer)]


class Schema(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, from_attributes=True, extra="forbid"
    )


class Body(Schema):
    """A request body: JSON types are taken as they are (no "true" for true, no "5" for 5)."""

    model_config = ConfigDict(strict=True)


TelegramToken = Annotated[str, StringConstraints(pattern=r"^[0-9]{5,12}:[A-Za-z0-9_-]{30,64}$")]
DiscordToken = Annotated[
    str,
    StringConstraints(
        pattern=r"^[A-Za-z0-9_-]{20,100}\.[A-Za-z0-9_-]{4,20}\.[A-Za-z0-9_-]{20,100}$"
    ),
]
SlackBotToken = Annotated[str, StringConstraints(pattern=r"^xoxb-[A-Za-z0-9-]{10,250}$")]
SlackAppToken = Annotated[str, StringConstraints(pattern=r"^xapp-[A-Za-z0-9-]{10,250}$")]


class TelegramCredentials(Body):
    bot_token: TelegramToken = Field(description="From @BotFather: 123456789:AA…")


class DiscordCredentials(Body):
    bot_token: DiscordToken


class SlackCredentials(Body):
    bot_token: SlackBotToken = Field(description="xoxb-…")
    app_token: SlackAppToken = Field(description="xapp-… (socket mode)")


class ChannelCredentials(Body):
    """Per-channel secrets: stored encrypted, passed to the agent, never returned."""

    telegram: TelegramCredentials | None = None
    discord: DiscordCredentials | None = None
    slack: SlackCredentials | None = None

    def as_env(self) -> dict[str, str]:
        """The environment the agent image reads them from."""
        env: dict[str, str] = {}
        if self.telegram:
            env["TELEGRAM_BOT_TOKEN"] = self.telegram.bot_token
        if self.discord:
            env["DISCORD_BOT_TOKEN"] = self.discord.bot_token
        if self.slack:
            env["SLACK_BOT_TOKEN"] = self.slack.bot_token
            env["SLACK_APP_TOKEN"] = self.slack.app_token
        return env


class AgentCreate(Body):
    # The rules of _needs_a_key, stated in the OpenAPI schema too: a key or bundled use, and
    # credentials for exactly the channels listed.
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["apiKey"], "properties": {"apiKey": {"type": "string"}}},
                {"required": ["usesBundledApi"], "properties": {"usesBundledApi": {"const": True}}},
            ],
            "allOf": [
                {
                    "if": {
                        "required": ["channels"],
                        "properties": {"channels": {"contains": {"const": channel}}},
                    },
                    "then": {
                        "required": ["channelCredentials"],
                        "properties": {
                            "channelCredentials": {
                                "required": [channel],
                                "properties": {channel: {"type": "object"}},
                            }
                        },
                    },
                    "else": {
                        "properties": {
                            "channelCredentials": {"properties": {channel: {"type": "null"}}}
                        }
                    },
                }
                for channel in ("telegram", "discord", "slack")
            ],
        }
    )

    name: AgentName
    model_provider: Provider = "claude"
    model: ModelName = "claude-sonnet-4-20250514"
    api_key: ApiKey | None = Field(
        default=None, description="The user's own provider key; never returned."
    )
    uses_bundled_api: bool = False
    channels: list[Channel] = Field(
        default_factory=list, max_length=3, json_schema_extra={"uniqueItems": True}
    )
    channel_credentials: ChannelCredentials = Field(default_factory=ChannelCredentials)

    @model_validator(mode="after")
    def _needs_a_key(self) -> AgentCreate:
        if self.api_key is None and not self.uses_bundled_api:
            raise ValueError("give apiKey, or set usesBundledApi to true where your plan allows it")
        if len(set(self.channels)) != len(self.channels):
            raise ValueError("channels must not repeat")
        given = {
            name
            for name in ("telegram", "discord", "slack")
            if getattr(self.channel_credentials, name)
        }
        # WhatsApp has no credential: its owner links it with a QR code in the Control UI.
        if missing := sorted(set(self.channels) - given - {"whatsapp"}):
            raise ValueError(f"channelCredentials needed for: {', '.join(missing)}")
        if unused := sorted(given - set(self.channels)):
            raise ValueError(
                f"channelCredentials given for channels not listed: {', '.join(unused)}"
            )
        return self


class LlmAccess(Schema):
    ok: bool
    key_source: Literal["own", "bundled"] = Field(
        description="The agent's own API key, or ClawHQ's bundled one."
    )
    code: str | None = Field(
        description="Why its model calls are refused (e.g. after a plan change)."
    )
    message: str | None


class AgentPublic(Schema):
    """An agent as its owner sees it: no API key, no webhook token."""

    id: str
    name: str
    user_id: str
    model_provider: str
    model: str
    status: AgentStatus
    desired_state: DesiredState = Field(description="What the owner asked for last.")
    last_error: str | None = Field(description="Why the agent last failed, in plain words.")
    last_exit_code: int | None
    oom_killed: bool = Field(description="Whether the last exit was an out-of-memory kill.")
    restart_count: int
    next_restart_at: datetime | None
    last_healthy_at: datetime | None
    container_id: str | None
    container_port: int | None
    container_status: str | None = Field(
        default=None, description="What the engine reports now: running, exited, missing, unknown."
    )
    image: str | None = Field(
        default=None,
        description="The image pinned for this agent (null: its plan's or the default).",
    )
    up_to_date: bool = Field(
        default=True,
        description="Whether its container was made from its current spec (image, limits, env…). "
        "Only a rollout or the owner's deploy recreates a running agent that is not.",
    )
    drift: list[str] = Field(
        default_factory=list, description="What differs from the current spec (no secrets)."
    )
    has_api_key: bool
    uses_bundled_api: bool
    llm_access: LlmAccess | None = Field(
        default=None, description="Whether its model calls go through ClawHQ's LLM gateway now."
    )
    channels: list[str]
    total_messages: int
    total_tokens: int
    last_active_at: datetime | None
    last_heartbeat: datetime | None
    deployed_at: datetime | None
    created_at: datetime
    updated_at: datetime


class AgentList(Schema):
    agents: list[AgentPublic]


class Credentials(Body):
    email: EmailStr
    password: Password


class Login(Credentials):
    cookie: bool = Field(
        default=False,
        description="Start a browser session instead: the token goes in the HttpOnly "
        "clawhq_session cookie (never in the body), and requests that change something send "
        "csrfToken (also in the clawhq_csrf cookie) as X-CSRF-Token.",
    )


class UserPublic(Schema):
    id: str
    email: str
    plan: str = Field(validation_alias="plan_name")
    is_admin: bool
    created_at: datetime


class Session(Schema):
    user: UserPublic
    token: str
    token_type: Literal["bearer"] = "bearer"


class BrowserSession(Schema):
    """A login with ``cookie: true``: the session token is in the cookie only."""

    user: UserPublic
    csrf_token: str = Field(description="Send as X-CSRF-Token on POST, PATCH, PUT and DELETE.")


class TokenPublic(Schema):
    """An API token as its owner sees it: never the token itself, nor its digest."""

    id: str
    name: str
    created_at: datetime
    expires_at: datetime | None
    current: bool = Field(description="the token this request was made with")


class TokenList(Schema):
    tokens: list[TokenPublic]


class TokensRevoked(Schema):
    revoked: int


class PlanChange(Body):
    plan: Annotated[
        str, StringConstraints(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$")
    ]


class Heartbeat(Body):
    type: Literal["heartbeat"]


class Usage(Body):
    type: Literal["usage"]
    messages: JsonInt = Field(ge=0, le=1_000_000)
    tokens: JsonInt = Field(
        default=0,
        ge=0,
        le=1_000_000_000,
        description="Accepted and ignored: tokens are metered by ClawHQ's LLM gateway.",
    )
    # No control characters: PostgreSQL cannot store NUL, and they have no business in an id.
    event_id: Annotated[
        str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")
    ]


AgentEvent = Annotated[Heartbeat | Usage, Field(discriminator="type")]


class WebhookAck(Schema):
    accepted: bool
    duplicate: bool = False


class Problem(BaseModel):
    """An error, as RFC 9457 ``application/problem+json``."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    instance: str | None = None
    errors: list[dict[str, str]] | None = None


class AgentLogs(Schema):
    lines: list[str]


class AgentStats(Schema):
    cpu_percent: float = Field(description="100 is one full core.")
    memory_bytes: int
    memory_limit_bytes: int
    memory_percent: float
    pids: int
    network_rx_bytes: int
    network_tx_bytes: int
    disk_used_bytes: int | None = Field(
        default=None,
        description="Bytes used on the agent's workspace disk (null: a workspace with no cap, "
        "made before disks or on a host that cannot make them).",
    )
    disk_size_bytes: int | None = Field(
        default=None, description="The workspace disk's size: writes past it fail (ENOSPC)."
    )
    disk_free_bytes: int | None = Field(
        default=None, description="What the agent may still write on its workspace disk."
    )


class AgentEventPublic(Schema):
    id: int
    at: datetime
    kind: str = Field(description="created, deploying, started, crashed, restarted, stopped…")
    status: str | None
    message: str


class AgentEventList(Schema):
    events: list[AgentEventPublic]
    next_before: int | None = Field(description="Pass as ?before= for older events.")


class UserList(Schema):
    users: list[UserPublic]
    total: int


class AuditEventPublic(Schema):
    id: int
    at: datetime
    actor: str
    user_id: str | None
    action: str
    agent_id: str | None
    target_user_id: str | None
    result: str
    detail: str
    client: str | None
    request_id: str | None


class AuditEventList(Schema):
    events: list[AuditEventPublic]
    next_before: int | None
