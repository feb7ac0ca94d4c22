"""Which agent is knocking at the forward proxy: found by its LLM token, read at every
connection (a stop revokes the token; a plan change applies to the next connection)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import bindparam, select

from clawhq.credentials import LLM_TOKEN_PREFIX, hash_token
from clawhq.db.loop_reads import LoopReads
from clawhq.db.models import Agent, Plan, User
from clawhq.egress.policy import patterns_for
from clawhq.egress.proxy import EgressAgent, Identify
from clawhq.status import DesiredState

_a, _u, _p = Agent.__table__.c, User.__table__.c, Plan.__table__.c
_AGENT = (
    select(_a.id, _a.desired_state, _a.channels, _p.egress_policy)
    .join(User.__table__, _u.id == _a.user_id)
    .join(Plan.__table__, _p.name == _u.plan_name)
    .where(_a.llm_token_hash == bindparam("digest"))
)


def identifier(reads: LoopReads, operator_hosts: Sequence[str]) -> Identify:
    """The proxy's ``identify``: token -> the agent, its policy and its allowed hosts."""

    async def identify(token: str) -> EgressAgent | None:
        if not token.startswith(LLM_TOKEN_PREFIX) or len(token) > 200:
            return None
        row = await reads.first(_AGENT, digest=hash_token(token))
        if row is None or row["desired_state"] != DesiredState.RUNNING.value:
            return None
        channels = row["channels"]
        if isinstance(channels, str):  # a JSON column read by the raw driver
            channels = json.loads(channels)
        patterns = patterns_for(channels or (), operator_hosts)
        return EgressAgent(row["id"], row["egress_policy"], patterns)

    return identify
