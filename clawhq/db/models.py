"""The database schema: plans, users, API tokens, agents, port leases, webhook events, the
LLM ledger (its budget's tables: :mod:`clawhq.db.budgets`; backups: :mod:`clawhq.db.backups`).

The same models run on SQLite and PostgreSQL; Alembic migrations in ``migrations/`` create them.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from clawhq.status import AgentStatus, DesiredState

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Meta(Base):
    """Facts about this installation, such as its id."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))


class Plan(Base):
    """What a user may do: how many agents, and whether the operator's bundled keys are used."""

    __tablename__ = "plans"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    max_agents: Mapped[int] = mapped_column(Integer)
    bundled_keys_allowed: Mapped[bool] = mapped_column(Boolean)
    #: The agent image this plan's agents run (None: ``CLAWHQ_AGENT_IMAGE``).
    image: Mapped[str | None] = mapped_column(String(255))
    #: Model tokens a user may spend in a calendar month (UTC) on bundled keys (None: no cap).
    monthly_token_budget: Mapped[int | None] = mapped_column(BigInteger)
    #: Whether the budget also counts the tokens of the user's own keys.
    budget_own_keys: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Model calls and tokens one agent may use a minute (None: no limit).
    llm_requests_per_minute: Mapped[int | None] = mapped_column(Integer)
    llm_tokens_per_minute: Mapped[int | None] = mapped_column(BigInteger)
    #: Bytes of each agent's workspace filesystem (None: ``CLAWHQ_AGENT_DISK``).
    agent_disk: Mapped[int | None] = mapped_column(BigInteger)
    #: Where agents may connect: ``open``, ``allowlist`` (through ClawHQ's forward proxy) or
    #: ``none`` (ClawHQ only). See docs/egress.md.
    egress_policy: Mapped[str] = mapped_column(String(16), default="open", server_default="open")
    #: Scheduled backups of its agents' workspaces: ``daily`` or ``off`` (docs/backups.md),
    #: keeping the newest ``backup_keep`` scheduled ones of each agent.
    backup_schedule: Mapped[str] = mapped_column(String(16), default="off", server_default="off")
    backup_keep: Mapped[int] = mapped_column(Integer, default=7, server_default="7")


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    plan_name: Mapped[str] = mapped_column(ForeignKey("plans.name"), default="free")
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    plan: Mapped[Plan] = relationship(lazy="joined")


class ApiToken(Base):
    """A bearer token for the API, stored as its SHA-256 digest."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship(lazy="joined")


class Agent(Base):
    """One user's OpenClaw agent: its desired configuration and what ClawHQ knows of it."""

    __tablename__ = "agents"
    __table_args__ = (UniqueConstraint("user_id", "name", name="uq_agents_user_id_name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    model_provider: Mapped[str] = mapped_column(String(16), default="claude")
    model: Mapped[str] = mapped_column(String(128), default="claude-sonnet-4-20250514")
    status: Mapped[AgentStatus] = mapped_column(
        Enum(AgentStatus, native_enum=False, length=16, validate_strings=True),
        default=AgentStatus.STOPPED,
    )
    status_changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    desired_state: Mapped[DesiredState] = mapped_column(
        Enum(DesiredState, native_enum=False, length=16, validate_strings=True),
        default=DesiredState.STOPPED,
    )
    keep_workspace: Mapped[bool] = mapped_column(Boolean, default=False)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_exit_code: Mapped[int | None] = mapped_column(Integer)
    oom_killed: Mapped[bool] = mapped_column(Boolean, default=False)
    restart_count: Mapped[int] = mapped_column(Integer, default=0)
    #: Bumped by every change of what is wanted (an operation, a rollout step).
    generation: Mapped[int] = mapped_column(Integer, default=0)
    #: The generation the controller last acted on.
    handled_generation: Mapped[int] = mapped_column(Integer, default=0)
    #: The generation of the last request for a fresh container (a deploy, a rollout step).
    recreate_generation: Mapped[int] = mapped_column(Integer, default=0)
    #: Counts container starts; a probe result or a follow-up of an older start is ignored.
    start_generation: Mapped[int] = mapped_column(Integer, default=0)
    start_deadline_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The image this agent is pinned to (None: its plan's, else ``CLAWHQ_AGENT_IMAGE``).
    image: Mapped[str | None] = mapped_column(String(255))
    #: What the current container was created from (no secrets): drift is shown against it.
    applied_config: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: The rollout updating this agent right now, if any.
    rollout_id: Mapped[str | None] = mapped_column(String(32))
    backoff_step: Mapped[int] = mapped_column(Integer, default=0)
    next_restart_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_healthy_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    container_id: Mapped[str | None] = mapped_column(String(64))
    container_port: Mapped[int | None] = mapped_column(Integer)
    api_key_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    api_key_key_id: Mapped[str | None] = mapped_column(String(16))
    channel_secrets_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    channel_secrets_key_id: Mapped[str | None] = mapped_column(String(16))
    #: What ClawHQ's proxy sends the current container's gateway to be trusted (sealed).
    proxy_identity_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    proxy_identity_key_id: Mapped[str | None] = mapped_column(String(16))
    uses_bundled_api: Mapped[bool] = mapped_column(Boolean, default=False)
    channels: Mapped[list[str]] = mapped_column(JSON, default=list)
    webhook_token_hash: Mapped[str | None] = mapped_column(String(64))
    #: The digest of the current container's LLM token (None: revoked, e.g. stopped).
    llm_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    total_messages: Mapped[int] = mapped_column(BigInteger, default=0)
    total_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    last_active_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_heartbeat: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deployed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    @property
    def has_api_key(self) -> bool:
        return self.api_key_ciphertext is not None

    @property
    def api_key_context(self) -> str:
        return api_key_context(self.id)

    @property
    def channel_secrets_context(self) -> str:
        return f"agent:{self.id}:channel_secrets"

    @property
    def proxy_identity_context(self) -> str:
        return proxy_identity_context(self.id)


def api_key_context(agent_id: str) -> str:
    """The associated data that binds an agent's API key ciphertext to that agent."""
    return f"agent:{agent_id}:api_key"


def proxy_identity_context(agent_id: str) -> str:
    """The associated data binding an agent's sealed proxy identity to that agent."""
    return f"agent:{agent_id}:proxy_identity"


class PortLease(Base):
    """A host port held by one agent. The primary key makes a port impossible to lease twice."""

    __tablename__ = "port_leases"

    port: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), unique=True)
    leased_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AgentEvent(Base):
    """One entry of an agent's lifecycle history, as its owner reads it."""

    __tablename__ = "agent_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str | None] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text, default="")


class AuditEvent(Base):
    """Who did what to which agent, when, with what result. Append-only (database triggers
    refuse updates and deletes); no foreign keys, so it outlives what it describes."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[str | None] = mapped_column(String(32), index=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    agent_id: Mapped[str | None] = mapped_column(String(32), index=True)
    target_user_id: Mapped[str | None] = mapped_column(String(32))
    result: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text, default="")
    client: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(64))


class Rollout(Base):
    """An operator's update of many agents to a new spec, a few at a time, health-gated."""

    __tablename__ = "rollouts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    #: The image to move the agents to (None: their current spec, e.g. after a settings change).
    image: Mapped[str | None] = mapped_column(String(255))
    #: Which agents: ``{"agents": [...]}``, ``{"plan": "pro"}`` or ``{"all": true}``.
    selector: Mapped[dict[str, Any]] = mapped_column(JSON)
    max_unavailable: Mapped[int] = mapped_column(Integer, default=1)
    max_failures: Mapped[int] = mapped_column(Integer, default=1)
    state: Mapped[str] = mapped_column(String(16), default="running", index=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RolloutAgent(Base):
    """One agent's place in a rollout: pending, updating, done, rolled back or skipped."""

    __tablename__ = "rollout_agents"

    rollout_id: Mapped[str] = mapped_column(
        ForeignKey("rollouts.id", ondelete="CASCADE"), primary_key=True
    )
    agent_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    #: The image the agent ran before (what a rollback returns to), and its pin then.
    previous_image: Mapped[str | None] = mapped_column(String(255))
    previous_pin: Mapped[str | None] = mapped_column(String(255))
    #: The agent's generation once this rollout asked for its new container (or rollback).
    generation: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ImageVersion(Base):
    """An agent image ClawHQ built: its tag and the image id (digest) it had then."""

    __tablename__ = "image_versions"

    tag: Mapped[str] = mapped_column(String(255), primary_key=True)
    image_id: Mapped[str] = mapped_column(String(128))
    built_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LlmCall(Base):
    """One model call an agent made through the LLM gateway: what it cost, never what it said.

    No foreign keys: the ledger outlives the agents (and users) it bills.
    """

    __tablename__ = "llm_calls"
    __table_args__ = (
        Index("ix_llm_calls_user_id_at", "user_id", "at"),
        Index("ix_llm_calls_agent_id_at", "agent_id", "at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    agent_id: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[str] = mapped_column(String(32))
    plan: Mapped[str] = mapped_column(String(32))
    provider: Mapped[str] = mapped_column(String(16))
    model: Mapped[str | None] = mapped_column(String(128))
    #: ``own`` (the agent's key) or ``bundled`` (the operator's).
    key_source: Mapped[str] = mapped_column(String(8))
    streamed: Mapped[bool] = mapped_column(Boolean, default=False)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cache_read_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cache_write_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    total_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    #: The provider's HTTP status (0: no answer).
    status: Mapped[int] = mapped_column(Integer)
    #: ``ok``, ``error`` (the provider said no), ``client_gone`` (the agent hung up; the call
    #: was read to its end), ``broken`` (the provider's answer stopped short).
    outcome: Mapped[str] = mapped_column(String(16))
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)


class WebhookEvent(Base):
    """A usage event already counted, so a retried delivery is not counted twice (for
    ``CLAWHQ_WEBHOOK_DEDUP_HOURS``, and at most the newest 10,000 of an agent)."""

    __tablename__ = "webhook_events"

    agent_id: Mapped[str] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True
    )
    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    #: Indexed: rows older than ``CLAWHQ_WEBHOOK_DEDUP_HOURS`` are pruned by this column.
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class AgentAccessCode(Base):
    """A one-time code that takes an owner from ClawHQ's origin to their agent's own (stored
    as its SHA-256 digest, good once, for a minute)."""

    __tablename__ = "agent_access_codes"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
