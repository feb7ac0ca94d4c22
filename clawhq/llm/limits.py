"""What an agent may spend: calls and tokens a minute, calls in flight, its owner's monthly
budget, and the output cap a call gets. Over a limit the call is refused with a 429 before it
reaches the provider.

The per-minute windows and the in-flight counts live in this process (one ``clawhq serve``
serves the gateway); the budget is read from the ledger and the reservations of the calls in
flight (:mod:`clawhq.llm.reservations`), so it holds across restarts and processes.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from datetime import UTC, datetime

from clawhq.db.loop_reads import LoopReads
from clawhq.errors import LlmRefused
from clawhq.llm.callers import Caller
from clawhq.llm.caps import UNCAPPED_OUTPUT, Ask
from clawhq.llm.ledger import MONTH_SPENT, month_params

WINDOW = 60.0


def month_start(now: datetime) -> datetime:
    """The start of the calendar month (UTC) ``now`` is in: when budgets start over."""
    now = now.astimezone(UTC)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


async def spent_this_month(reads: LoopReads, user_id: str, *, bundled_only: bool) -> int:
    """Tokens the user's agents used this month (on bundled keys only, or all): one row or
    two of the ledger's monthly totals."""
    params = month_params(user_id, datetime.now(UTC), bundled_only)
    row = await reads.first(MONTH_SPENT[bundled_only], **params)
    return int(row["spent"]) if row else 0


class Budgets:
    """What each user spent this month: summed from the ledger at most every ``ttl`` seconds,
    with this process's own calls added in between (so a busy user costs one sum, not one a
    call; another process's calls show within ``ttl``)."""

    def __init__(self, ttl: float = 5.0) -> None:
        self._ttl = ttl
        self._spent: dict[tuple[str, bool], tuple[float, str, int]] = {}

    async def spent(self, reads: LoopReads, user_id: str, *, bundled_only: bool) -> int:
        key, now = (user_id, bundled_only), time.monotonic()
        month = month_start(datetime.now(UTC)).isoformat()
        found = self._spent.get(key)
        if found is not None and now - found[0] < self._ttl and found[1] == month:
            return found[2]
        spent = await spent_this_month(reads, user_id, bundled_only=bundled_only)
        if len(self._spent) > 10_000:
            self._spent.clear()
        self._spent[key] = (now, month, spent)
        return spent

    def charge(self, user_id: str, tokens: int, *, bundled: bool) -> None:
        """Add a finished call's tokens to what is known of its user's month."""
        for bundled_only in (False, True) if bundled else (False,):
            found = self._spent.get((user_id, bundled_only))
            if found is not None:
                self._spent[(user_id, bundled_only)] = (found[0], found[1], found[2] + tokens)


class _Window:
    """Amounts (one per call, or tokens) within the last minute."""

    __slots__ = ("entries", "sum")

    def __init__(self) -> None:
        self.entries: deque[tuple[float, int]] = deque()
        self.sum = 0

    def total(self, now: float) -> int:
        while self.entries and self.entries[0][0] <= now - WINDOW:
            self.sum -= self.entries.popleft()[1]
        return self.sum

    def add(self, now: float, amount: int) -> None:
        self.entries.append((now, amount))
        self.sum += amount

    def retry_after(self, now: float) -> int:
        oldest = self.entries[0][0] if self.entries else now
        return max(1, math.ceil(oldest + WINDOW - now))


class AgentLimits:
    """Per-agent calls and tokens a minute, and calls in flight."""

    def __init__(self, max_in_flight: int) -> None:
        self._max_in_flight = max_in_flight
        self._lock = threading.Lock()
        self._calls: dict[str, _Window] = {}
        self._tokens: dict[str, _Window] = {}
        self._in_flight: dict[str, int] = {}

    def admit(self, caller: Caller) -> None:
        """Count a call in, or refuse it (429) when one of the agent's limits is reached."""
        now = time.monotonic()
        agent = caller.agent_id
        with self._lock:
            calls = self._calls.setdefault(agent, _Window())
            tokens = self._tokens.setdefault(agent, _Window())
            rpm, tpm = caller.requests_per_minute, caller.tokens_per_minute
            if rpm is not None and calls.total(now) >= rpm:
                raise _limited(
                    f"this agent made {rpm} model calls in the last minute, its plan's limit",
                    "llm_requests_per_minute",
                    calls.retry_after(now),
                )
            if tpm is not None and tokens.total(now) >= tpm:
                raise _limited(
                    f"this agent used {tpm} tokens in the last minute, its plan's limit",
                    "llm_tokens_per_minute",
                    tokens.retry_after(now),
                )
            if self._in_flight.get(agent, 0) >= self._max_in_flight:
                raise _limited(
                    f"this agent has {self._max_in_flight} model calls in flight already "
                    "(CLAWHQ_LLM_CALLS_PER_AGENT)",
                    "llm_calls_in_flight",
                    1,
                )
            calls.add(now, 1)
            self._in_flight[agent] = self._in_flight.get(agent, 0) + 1

    def done(self, agent_id: str, tokens: int) -> None:
        """A call admitted earlier ended, having used ``tokens``."""
        now = time.monotonic()
        with self._lock:
            left = self._in_flight.get(agent_id, 1) - 1
            if left > 0:
                self._in_flight[agent_id] = left
            else:
                self._in_flight.pop(agent_id, None)
            if tokens:
                self._tokens.setdefault(agent_id, _Window()).add(now, tokens)
            self._forget_idle(now)

    def _forget_idle(self, now: float) -> None:
        if len(self._calls) < 4096:
            return
        for table in (self._calls, self._tokens):
            for agent in [a for a, w in table.items() if not w.total(now)]:
                if agent not in self._in_flight:
                    del table[agent]


def over_budget(caller: Caller, spent: int) -> LlmRefused | None:
    budget = caller.monthly_token_budget
    if budget is None or spent < budget:
        return None
    return budget_refusal(caller, f"is used up ({spent} used)")


def budget_refusal(caller: Caller, state: str) -> LlmRefused:
    """The 429 of a budget that cannot take the call; ``state`` says how it stands."""
    which = "" if caller.budget_own_keys else " on ClawHQ's bundled keys"
    return LlmRefused(
        429,
        "quota",
        "llm_budget_exhausted",
        f"the {caller.plan} plan's monthly budget of {caller.monthly_token_budget} tokens"
        f"{which} {state}; it starts over on the 1st (UTC)",
    )


def output_cap(ask: Ask, left: int, tokens_per_minute: int | None) -> int | None:
    """The output cap (per answer) a call gets with ``left`` tokens of its budget free: what
    it asked for (:data:`~clawhq.llm.caps.UNCAPPED_OUTPUT` without a cap), at most what is
    left after its input, and at most its agent's tokens a minute after its input. None when
    not even the provider's smallest cap fits."""
    wanted = ask.output_cap if ask.output_cap is not None else UNCAPPED_OUTPUT
    room = (left - ask.input_tokens) // ask.choices
    if tokens_per_minute is not None:
        per_minute = (tokens_per_minute - ask.input_tokens) // ask.choices
        room = min(room, max(per_minute, ask.minimum))
    if room >= wanted:
        return wanted
    return room if room >= ask.minimum else None


def _limited(message: str, code: str, retry_after: int) -> LlmRefused:
    return LlmRefused(429, "rate_limit", code, message, retry_after)
