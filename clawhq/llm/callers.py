"""Who is calling the LLM gateway, and with which real key.

The caller is the agent holding the token, with its owner's plan as it is *now*
(:mod:`clawhq.services.agent_identity`). The real key is the agent's own, opened here only, or
the operator's bundled one where the plan includes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from clawhq.controller.secrets import llm_access_problem
from clawhq.credentials import is_llm_token
from clawhq.crypto import Keyring, Sealed
from clawhq.db.loop_reads import LoopReads
from clawhq.db.models import api_key_context
from clawhq.errors import LlmRefused
from clawhq.llm.providers import Provider
from clawhq.services.agent_identity import token_holder
from clawhq.settings import Settings


@dataclass(frozen=True)
class Caller:
    agent_id: str
    user_id: str
    model_provider: str
    plan: str
    has_own_key: bool
    bundled_keys_allowed: bool
    monthly_token_budget: int | None
    budget_own_keys: bool
    requests_per_minute: int | None
    tokens_per_minute: int | None
    sealed_key: Sealed | None
    #: The plan's egress policy now (``open``, ``allowlist``, ``none``), as the egress proxy
    #: reads it: provider-side tools that fetch or run code are for ``open`` agents only.
    egress_policy: str = "none"

    @property
    def egress_open(self) -> bool:
        return self.egress_policy == "open"

    @property
    def key_source(self) -> str:
        return "own" if self.has_own_key else "bundled"

    @property
    def budgeted(self) -> bool:
        """Whether this caller's tokens count against the monthly budget."""
        return self.monthly_token_budget is not None and (
            not self.has_own_key or self.budget_own_keys
        )


async def find_caller(reads: LoopReads, token: str | None) -> Caller:
    """The agent holding ``token`` right now, or a 401."""
    if token is None or not is_llm_token(token):
        raise LlmRefused(401, "authentication", "invalid_llm_token", "invalid ClawHQ LLM token")
    row = await token_holder(reads, token)
    if row is None:
        raise LlmRefused(
            401,
            "authentication",
            "invalid_llm_token",
            "invalid or revoked ClawHQ LLM token (a stop, delete or redeploy revokes it)",
        )
    ciphertext, key_id = row["api_key_ciphertext"], row["api_key_key_id"]
    return Caller(
        agent_id=row["id"],
        user_id=row["user_id"],
        model_provider=row["model_provider"],
        plan=row["plan"],
        has_own_key=ciphertext is not None,
        bundled_keys_allowed=bool(row["bundled_keys_allowed"]),
        monthly_token_budget=row["monthly_token_budget"],
        budget_own_keys=bool(row["budget_own_keys"]),
        requests_per_minute=row["llm_requests_per_minute"],
        tokens_per_minute=row["llm_tokens_per_minute"],
        sealed_key=Sealed(bytes(ciphertext), key_id) if ciphertext is not None and key_id else None,
        egress_policy=str(row["egress_policy"] or "none"),
    )


def real_key(caller: Caller, provider: Provider, settings: Settings, keyring: Keyring) -> str:
    """The provider key for this call, or a refusal saying why there is none."""
    if caller.model_provider != provider.model_provider:
        raise LlmRefused(
            403,
            "permission",
            "llm_provider_not_allowed",
            f"this agent's model provider is {caller.model_provider}: it may not call "
            f"/llm/{provider.name}/",
        )
    if caller.sealed_key is not None:
        return keyring.open(caller.sealed_key, api_key_context(caller.agent_id))
    problem = llm_access_problem(
        False, caller.bundled_keys_allowed, caller.model_provider, settings
    )
    if problem is not None:
        status, kind = (403, "permission") if problem.status == 403 else (503, "unavailable")
        raise LlmRefused(status, kind, problem.code, problem.message)
    return str(settings.bundled_key(caller.model_provider))
