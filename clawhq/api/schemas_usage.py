"""What the usage API answers: model calls and tokens from the LLM gateway's ledger."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from clawhq.api.schemas import Body, JsonInt, Schema


class UsageTotals(Schema):
    requests: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    total_tokens: int


class UsageGroup(UsageTotals):
    key: str | None = Field(description="The day (YYYY-MM-DD, UTC), model, agent or user id.")


class UsageReport(Schema):
    from_: datetime = Field(alias="from")
    to: datetime
    group_by: str | None
    agent_id: str | None = None
    user_id: str | None = None
    totals: UsageTotals
    groups: list[UsageGroup]


class Budget(Schema):
    monthly_tokens: int | None = Field(description="None: no monthly cap.")
    applies_to: str = Field(description="`bundled` (ClawHQ's keys only) or `all`.")
    used: int
    remaining: int | None


class Limits(Schema):
    requests_per_minute: int | None
    tokens_per_minute: int | None


class AgentUsage(Schema):
    agent_id: str
    total_tokens: int
    requests: int


class MyUsage(Schema):
    """The caller's use this calendar month (UTC), against their plan's budget."""

    plan: str
    from_: datetime = Field(alias="from")
    to: datetime
    budget: Budget
    limits: Limits = Field(description="Per agent.")
    totals: UsageTotals
    agents: list[AgentUsage]


class PlanLlm(Schema):
    name: str
    bundled_keys_allowed: bool
    monthly_token_budget: int | None
    budget_own_keys: bool
    llm_requests_per_minute: int | None
    llm_tokens_per_minute: int | None
    #: Where its agents may connect: open, allowlist or none (docs/egress.md).
    egress_policy: str
    #: Bytes of each agent's workspace (null: CLAWHQ_AGENT_DISK; docs/disks.md).
    agent_disk: int | None
    #: Scheduled backups of each agent's workspace: daily or off (docs/backups.md).
    backup_schedule: str
    #: Scheduled backups kept per agent.
    backup_keep: int


class PlanLlmChange(Body):
    """Only the fields given change; null lifts a cap."""

    monthly_token_budget: JsonInt | None = Field(default=None, ge=0, le=10**15)
    budget_own_keys: bool | None = None
    llm_requests_per_minute: JsonInt | None = Field(default=None, ge=0, le=1_000_000)
    llm_tokens_per_minute: JsonInt | None = Field(default=None, ge=0, le=10**12)
