"""Which agent an LLM token names: the one whose current container holds it, while it is meant
to run, with its owner's plan as it is *now*. The LLM gateway and the egress proxy ask at every
call and connection: a stop, delete or redeploy revokes the token at once (only its digest is
stored), a plan change applies to the next one."""

from __future__ import annotations

from sqlalchemy import bindparam, select

from clawhq.credentials import hash_token, is_llm_token
from clawhq.db.loop_reads import LoopReads, Row
from clawhq.db.models import Agent, Plan, User
from clawhq.status import DesiredState

_a, _u, _p = Agent.__table__.c, User.__table__.c, Plan.__table__.c
_HOLDER = (
    select(
        _a.id,
        _a.user_id,
        _a.desired_state,
        _a.model_provider,
        _a.api_key_ciphertext,
        _a.api_key_key_id,
        _a.channels,
        _p.name.label("plan"),
        _p.bundled_keys_allowed,
        _p.monthly_token_budget,
        _p.budget_own_keys,
        _p.llm_requests_per_minute,
        _p.llm_tokens_per_minute,
        _p.egress_policy,
    )
    .join(User.__table__, _u.id == _a.user_id)
    .join(Plan.__table__, _p.name == _u.plan_name)
    .where(_a.llm_token_hash == bindparam("digest"))
)


async def token_holder(reads: LoopReads, token: str) -> Row | None:
    """The running agent holding ``token`` and its plan's columns; None if there is none (a
    token that :func:`~clawhq.credentials.is_llm_token` refuses is not looked up)."""
    if not is_llm_token(token):
        return None
    row = await reads.first(_HOLDER, digest=hash_token(token))
    return row if row is not None and row["desired_state"] == DesiredState.RUNNING.value else None
