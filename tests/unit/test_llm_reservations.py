"""Budget reservations (clawhq/llm/reservations.py): calls in flight together never spend past
their owner's budget, their caps are lowered in the body the provider gets, and a reservation
ends with its call however it ends. On SQLite and PostgreSQL, through the real server (the
``served`` fixture of test_llm_gateway.py) and against the database straight."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, insert, select

from clawhq.db.budgets import LlmReservation
from clawhq.db.engine import create_db_engine, make_session_factory
from clawhq.db.models import LlmCall, new_id
from clawhq.errors import LlmRefused
from clawhq.llm import caps, ledger, reservations
from clawhq.llm.callers import Caller
from clawhq.llm.gateway import Gateway
from clawhq.llm.wires import Usage, Wire
from tests.conftest import clean_database
from tests.standins.llm import TOTALS
from tests.unit import test_llm_gateway
from tests.unit.test_llm_gateway import PROVIDER, Served, admin_headers, key_headers

served = test_llm_gateway.served  # the fixture: the real server over the stand-in providers

PROMPT = "Write a haiku about budgets. " * 5  # its estimate is above the stand-in's 31 tokens
CHAT = "/llm/openai/v1/chat/completions"


def set_budget(served: Served, budget: int, **limits: Any) -> None:
    change = {"monthlyTokenBudget": budget, **limits}
    reply = served.http.patch(
        "/api/admin/plans/pro/llm", json=change, headers=admin_headers(served)
    )
    assert reply.status_code == 200, reply.text


def spend(served: Served, owner: dict[str, str], agent_id: str, tokens: int) -> None:
    """A ledger row of ``tokens`` on a bundled key: what the user spent before."""
    call = ledger.CallRecord(
        agent_id=agent_id,
        user_id=owner["X-User-Id"],
        plan="pro",
        provider="openai",
        model="gpt-5",
        key_source="bundled",
        streamed=False,
        input_tokens=tokens,
        output_tokens=0,
        cache_read_tokens=0,
        cache_write_tokens=0,
        status=200,
        outcome="ok",
        latency_ms=1,
    )
    ledger.record(served.context.sessions, [call])


def held(served: Served, user_id: str) -> list[LlmReservation]:
    with served.context.sessions() as session:
        query = select(LlmReservation).where(LlmReservation.user_id == user_id)
        return list(session.scalars(query))


def wait_released(served: Served, user_id: str, ignore: str = "") -> None:
    for _ in range(300):
        if not [r for r in held(served, user_id) if r.id != ignore]:
            return
        time.sleep(0.01)
    raise AssertionError(f"reservations left: {held(served, user_id)}")


def spent(served: Served, user_id: str) -> int:
    with served.context.sessions() as session:
        query = select(func.coalesce(func.sum(LlmCall.total_tokens), 0))
        return int(session.scalar(query.where(LlmCall.user_id == user_id)) or 0)


def bundled_agent(served: Served, owner: dict[str, str], provider: str = "openai") -> Agent:
    """A RUNNING agent on the bundled key."""
    agent_id = served.agent(owner, provider, usesBundledApi=True)
    return Agent(agent_id, served.deploy(owner, agent_id))


@dataclass(frozen=True)
class Agent:
    id: str
    token: str


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "gpt-5", "messages": [{"role": "user", "content": PROMPT}], **fields}


@pytest.mark.parametrize("headroom", [1, 250])
def test_sixteen_parallel_streams_never_spend_past_the_budget(
    served: Served, headroom: int
) -> None:
    owner = served.user("pro")
    agents = [bundled_agent(served, owner) for _ in range(4)]
    budget = 1_000_000
    set_budget(served, budget)
    spend(served, owner, "seed", budget - headroom)
    served.llm.stream_delay, served.llm.stream_chunks = 0.05, 10  # each lasts half a second
    body = chat(stream=True, stream_options={"include_usage": True}, max_completion_tokens=64)
    start = threading.Barrier(16)

    def stream(n: int) -> tuple[int, str]:
        with httpx.Client(base_url=served.base, timeout=30) as client:
            start.wait()
            headers = key_headers("openai", agents[n % 4].token)
            with client.stream("POST", CHAT, json=body, headers=headers) as reply:
                reply.read()
                return reply.status_code, reply.headers.get("x-clawhq-error", "")

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(stream, range(16)))
    through = [a for a in answers if a[0] == 200]
    assert all(a == (429, "llm_budget_exhausted") for a in answers if a[0] != 200), answers
    # Each holds its estimate (PROMPT's, above the stand-in's input) and 64, or what is left.
    left, expected, estimate = headroom, 0, caps.estimate_input(body)
    while left > estimate and expected < 16:
        left -= estimate + min(64, left - estimate)
        expected += 1
    assert len(through) == expected
    wait_released(served, owner["X-User-Id"])
    assert spent(served, owner["X-User-Id"]) <= budget
    for call in served.llm.calls:
        assert call.body["max_completion_tokens"] <= 64


def test_the_cap_is_lowered_in_the_body_the_provider_gets(served: Served) -> None:
    owner = served.user("pro")
    budget, left = 1_000_000, 500
    set_budget(served, budget)
    spend(served, owner, "seed", budget - left)

    def sent(provider: str, path: str, body: dict[str, Any], token: str) -> Any:
        url = f"/llm/{PROVIDER[provider]}{path}"
        reply = served.http.post(url, json=body, headers=key_headers(provider, token))
        assert reply.status_code == 200, reply.text
        wait_released(served, owner["X-User-Id"])
        return served.llm.calls[-1].body

    def room(body: dict[str, Any]) -> int:  # what is left after the call's input
        return budget - spent(served, owner["X-User-Id"]) - caps.estimate_input(body)

    openai = bundled_agent(served, owner).token
    asked = chat(max_completion_tokens=100_000)
    expected = room(asked)
    assert sent("openai", "/v1/chat/completions", asked, openai)["max_completion_tokens"] == (
        expected
    )
    legacy = chat(max_tokens=10**6)  # the old field alone: lowered, no other added
    expected = room(legacy)
    got = sent("openai", "/v1/chat/completions", legacy, openai)
    assert got["max_tokens"] == expected and "max_completion_tokens" not in got
    uncapped = chat()  # no cap: what is left becomes the cap
    expected = room(uncapped)
    assert sent("openai", "/v1/chat/completions", uncapped, openai)["max_completion_tokens"] == (
        expected
    )
    three = chat(n=3, max_completion_tokens=100_000)  # each of three answers gets a third
    expected = room(three) // 3
    assert sent("openai", "/v1/chat/completions", three, openai)["max_completion_tokens"] == (
        expected
    )
    small = chat(max_completion_tokens=5)  # under what is left: as asked
    assert sent("openai", "/v1/chat/completions", small, openai)["max_completion_tokens"] == 5
    responses = {"model": "gpt-5", "input": PROMPT, "max_output_tokens": 10**5}
    expected = room(responses)
    assert sent("openai", "/v1/responses", responses, openai)["max_output_tokens"] == expected

    claude = bundled_agent(served, owner, "claude").token
    anthropic = chat(max_tokens=64_000)
    expected = room(anthropic)
    assert sent("claude", "/v1/messages", anthropic, claude)["max_tokens"] == expected
    gemini = bundled_agent(served, owner, "gemini").token
    contents = {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]}
    expected = room(contents)
    got = sent("gemini", "/v1beta/models/gemini-2.5-pro:generateContent", contents, gemini)
    assert got["generationConfig"] == {"maxOutputTokens": expected}

    # The user's own key is not budgeted on this plan: its body goes as it was sent.
    own = served.deploy(owner, served.agent(owner, "openai"))
    assert sent("openai", "/v1/chat/completions", asked, own) == asked


def test_the_cap_is_at_most_the_agents_tokens_a_minute(served: Served) -> None:
    owner = served.user("pro")
    set_budget(served, 10**9, llmTokensPerMinute=700)
    agent = bundled_agent(served, owner)
    body = chat(max_completion_tokens=50_000)
    reply = served.http.post(CHAT, json=body, headers=key_headers("openai", agent.token))
    assert reply.status_code == 200, reply.text
    expected = 700 - caps.estimate_input(body)
    assert served.llm.calls[-1].body["max_completion_tokens"] == expected


@pytest.mark.parametrize("ending", ["ok", "upstream_error", "client_gone", "unreachable"])
def test_a_reservation_ends_with_its_call(
    served: Served, ending: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = served.user("pro")
    user_id = owner["X-User-Id"]
    set_budget(served, 1_000_000)
    agent = bundled_agent(served, owner)
    headers = key_headers("openai", agent.token)
    body = chat(stream=True, max_completion_tokens=300)
    served.llm.stream_delay, served.llm.stream_chunks = 0.05, 20
    if ending == "upstream_error":
        served.llm.fail_next(529, b'{"error":{"message":"overloaded","type":"server_error"}}')
    if ending == "unreachable":
        served.llm.__exit__(None, None, None)
    opening: list[tuple[list[LlmReservation], Any]] = []  # what was held as the call left
    send = Gateway._open

    async def spy(self: Gateway, *args: Any) -> Any:
        opening.append((held(served, user_id), json.loads(args[4])))
        return await send(self, *args)

    monkeypatch.setattr(Gateway, "_open", spy)
    with served.http.stream("POST", CHAT, json=body, headers=headers) as reply:
        chunks = reply.iter_raw()
        if ending in ("ok", "client_gone"):
            next(chunks)
            [during] = held(served, user_id)  # still held while the answer streams
            assert during.expires_at > datetime.now(UTC)
        if ending != "client_gone":
            for _ in chunks:
                pass
    [([before], sent)] = opening
    # Its input as estimated on the body it sent (with the usage ClawHQ asks for), its cap.
    assert before.tokens == caps.estimate_input(sent) + 300
    assert before.key_source == "bundled" and before.agent_id == agent.id
    status = {"ok": 200, "upstream_error": 529, "client_gone": 200, "unreachable": 502}
    assert reply.status_code == status[ending]
    wait_released(served, user_id)
    if ending == "unreachable":
        assert spent(served, user_id) == 0
        return
    [row] = served.wait_calls(agent.id, 1)
    expected = {"ok": "ok", "upstream_error": "error", "client_gone": "client_gone"}[ending]
    assert row.outcome == expected
    # Reported usage is charged; a provider's refusal without usage costs nothing.
    assert row.total_tokens == (0 if ending == "upstream_error" else TOTALS["openai_chat"])


def test_an_expired_reservation_counts_no_more(served: Served) -> None:
    owner = served.user("pro")
    user_id = owner["X-User-Id"]
    budget = 1_000_000
    set_budget(served, budget)
    agent = bundled_agent(served, owner)
    now = datetime.now(UTC)
    row = {"user_id": user_id, "agent_id": "gone", "key_source": "bundled", "tokens": budget}
    expired = new_id()
    with served.context.sessions.begin() as session:  # a dead process's: expired
        session.execute(
            insert(LlmReservation).values(
                id=expired, created_at=now - timedelta(hours=1), expires_at=now, **row
            )
        )
    headers = key_headers("openai", agent.token)
    assert served.http.post(CHAT, json=chat(), headers=headers).status_code == 200
    wait_released(served, user_id, ignore=expired)
    with served.context.sessions.begin() as session:  # a live one: it holds the whole budget
        session.execute(
            insert(LlmReservation).values(
                id=new_id(), created_at=now, expires_at=now + timedelta(minutes=5), **row
            )
        )
    refused = served.http.post(CHAT, json=chat(), headers=headers)
    assert refused.status_code == 429, refused.text
    assert refused.headers["x-clawhq-error"] == "llm_budget_exhausted"
    assert f"{budget} held by calls in flight" in refused.json()["error"]["message"]


def test_an_answer_without_usage_is_charged_its_reservation(served: Served) -> None:
    owner = served.user("pro")
    set_budget(served, 1_000_000)
    agent = bundled_agent(served, owner)
    served.llm.fail_next(200, b'{"id":"chatcmpl-1","object":"chat.completion","choices":[]}')
    body = chat(max_completion_tokens=200)
    reply = served.http.post(CHAT, json=body, headers=key_headers("openai", agent.token))
    assert reply.status_code == 200
    wait_released(served, owner["X-User-Id"])
    [row] = served.wait_calls(agent.id, 1)
    assert (row.input_tokens, row.output_tokens) == (caps.estimate_input(body), 200)
    assert row.total_tokens == served.total_tokens(row.agent_id)


# -- against the database: several processes, renewal, the ledger's settling -----------------


def caller(user_id: str, budget: int, *, agent_id: str = "a1") -> Caller:
    return Caller(
        agent_id=agent_id,
        user_id=user_id,
        model_provider="claude",
        plan="pro",
        has_own_key=False,
        bundled_keys_allowed=True,
        monthly_token_budget=budget,
        budget_own_keys=False,
        requests_per_minute=None,
        tokens_per_minute=None,
        sealed_key=None,
    )


MESSAGE = b'{"max_tokens":100,"messages":[{"role":"user","content":"hi"}]}'


def holding(engine: Engine, url: str, who: Caller, count: int, **options: Any) -> list[Any]:
    """``count`` reservations taken at once by a process of its own (its own engine, its own
    loop): each Held, or the refusal's code."""
    mine = reservations.Reservations(engine, url, **options)

    async def one() -> Any:
        try:
            return await mine.hold(who, "anthropic", Wire.ANTHROPIC, "/v1/messages", MESSAGE)
        except LlmRefused as refused:
            return refused.code

    async def all_of_them() -> list[Any]:
        try:
            return list(await asyncio.gather(*(one() for _ in range(count))))
        finally:
            await mine.aclose()

    return asyncio.run(all_of_them())


def test_processes_reserving_at_once_never_hold_more_than_the_budget(database_url: str) -> None:
    engines = [create_db_engine(database_url) for _ in range(2)]
    try:
        one = caps.read_ask(Wire.ANTHROPIC, "anthropic", "/v1/messages", MESSAGE)
        per_call = one.input_tokens + 100
        budget = 5 * per_call + per_call // 2  # room for five whole calls and a cut one
        who = caller(new_id(), budget)
        start = threading.Barrier(2)

        def process(engine: Engine) -> list[Any]:
            start.wait()
            return holding(engine, database_url, who, 12)

        with ThreadPoolExecutor(2) as pool:
            answers = [a for side in pool.map(process, engines) for a in side]
        got = [a.tokens if isinstance(a, reservations.Held) else 0 for a in answers]
        assert {a for a in answers if isinstance(a, str)} == {"llm_budget_exhausted"}
        assert sorted(got, reverse=True)[:7] == [per_call] * 5 + [per_call // 2, 0]
        with engines[0].connect() as conn:
            total = conn.scalar(
                select(func.sum(LlmReservation.tokens)).where(LlmReservation.user_id == who.user_id)
            )
        assert total == sum(got) <= budget
    finally:
        for engine in engines:
            engine.dispose()


def test_live_reservations_are_renewed_and_dead_ones_purged(database_url: str) -> None:
    engine = create_db_engine(database_url)
    try:
        sessions = make_session_factory(engine)
        mine = reservations.Reservations(engine, database_url, ttl=timedelta(seconds=2))
        who = caller(new_id(), 10**6)

        async def in_flight() -> reservations.Held:
            try:
                return await mine.hold(who, "anthropic", Wire.ANTHROPIC, "/v1/messages", MESSAGE)
            finally:
                await mine.aclose()

        live = asyncio.run(in_flight())
        # Another process's, which died: nobody renews it.
        [gone] = holding(engine, database_url, who, 1, ttl=timedelta(seconds=2))
        time.sleep(2.1)  # both past their two seconds; only the live one is renewed
        with sessions.begin() as session:
            mine.upkeep(session)
        with sessions() as session:
            rows = {r.id: r for r in session.scalars(select(LlmReservation))}
        assert set(rows) == {live.id} and gone.id not in rows
        assert rows[live.id].expires_at > datetime.now(UTC)
        # The call ends: the ledger writes its row and deletes the reservation together.
        call = ledger.CallRecord(
            who.agent_id, who.user_id, "pro", "anthropic", "m", "bundled", False,
            10, 5, 0, 0, 200, "ok", 3,
        )  # fmt: skip
        ledger.record(sessions, [call], [mine.forget(live.id)])
        with sessions() as session:
            assert session.scalars(select(LlmReservation)).all() == []
            assert session.scalar(select(func.sum(LlmCall.total_tokens))) == 15
    finally:
        engine.dispose()


def test_the_ledger_writer_runs_its_upkeep_even_when_idle(database_url: str) -> None:
    engine = create_db_engine(database_url)
    rounds: list[float] = []
    try:
        writer = ledger.LedgerWriter(
            make_session_factory(engine),
            upkeep=lambda session: rounds.append(time.monotonic()),
            upkeep_every=0.05,
        )
        time.sleep(0.5)
        writer.release(new_id())  # a release alone (no call) is written too
        writer.close()
    finally:
        engine.dispose()
    assert len(rounds) >= 3


def test_a_refusal_by_the_provider_without_usage_costs_nothing() -> None:
    found = reservations.Held("r", 40, 60, b"{}")
    assert reservations.charged(found, Usage(), 400).total_tokens == 0
    assert reservations.charged(found, Usage(), 200).total_tokens == 100
    reported = Usage(input_tokens=3, output_tokens=4, seen=True)
    assert reservations.charged(found, reported, 200) is reported
    assert reservations.charged(None, Usage(), 200).total_tokens == 0


def test_on_sqlite_a_reservation_waits_off_the_loop_for_another_writer(sqlite_url: str) -> None:
    with clean_database(sqlite_url):
        engine = create_db_engine(sqlite_url)
        mine = reservations.Reservations(engine, sqlite_url)
        who = caller(new_id(), 10**6)
        writing, done = threading.Event(), threading.Event()

        def writer() -> None:  # another writer holds the file's lock for a while
            with engine.begin() as conn:
                conn.execute(select(1))
                writing.set()
                done.wait(5)

        async def reserve() -> tuple[reservations.Held, float]:
            ticks = 0

            async def tick() -> None:  # the loop keeps running while the reservation waits
                nonlocal ticks
                while not done.is_set():
                    ticks += 1
                    await asyncio.sleep(0.01)

            ticking = asyncio.create_task(tick())
            asyncio.get_running_loop().call_later(0.3, done.set)
            try:
                found = await mine.hold(who, "anthropic", Wire.ANTHROPIC, "/v1/messages", MESSAGE)
            finally:
                await ticking
                await mine.aclose()
            return found, ticks

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            writing.wait(5)
            found, ticks = asyncio.run(reserve())
        finally:
            done.set()
            thread.join()
            engine.dispose()
        assert (
            ticks >= 10
            and found.tokens
            == caps.read_ask(Wire.ANTHROPIC, "anthropic", "/v1/messages", MESSAGE).input_tokens
            + 100
        )


def test_the_monthly_totals_follow_the_ledger_and_the_migration_fills_them(
    database_url: str,
) -> None:
    from alembic import command

    from clawhq.db import migrate
    from clawhq.db.budgets import LlmMonth

    engine = create_db_engine(database_url)
    try:
        command.downgrade(migrate.alembic_config(engine), "0011")
        old = {"plan": "pro", "provider": "openai", "model": "m", "streamed": False}
        old |= {"status": 200, "outcome": "ok", "latency_ms": 1, "agent_id": "a"}
        zero = dict.fromkeys(("input_tokens", "output_tokens", "cache_write_tokens"), 0)
        rows = [
            (datetime(2026, 10, 31, 23, 59, tzinfo=UTC), "u1", "bundled", 5),
            (datetime(2026, 11, 1, 0, 0, tzinfo=UTC), "u1", "bundled", 7),
            (datetime(2026, 11, 20, tzinfo=UTC), "u1", "bundled", 11),
            (datetime(2026, 11, 20, tzinfo=UTC), "u1", "own", 13),
            (datetime(2026, 11, 21, tzinfo=UTC), "u2", "bundled", 17),
        ]
        with engine.begin() as conn:
            conn.execute(
                insert(LlmCall),
                [
                    {**old, **zero, "at": at, "user_id": user, "key_source": source}
                    | {"cache_read_tokens": tokens, "total_tokens": tokens}
                    for at, user, source, tokens in rows
                ],
            )
        migrate.upgrade(engine)

        def months() -> set[tuple[str, str, str, int]]:
            with engine.connect() as conn:
                found = conn.execute(select(LlmMonth.__table__))
                return {(r.user_id, r.month, r.key_source, r.tokens) for r in found}

        assert months() == {
            ("u1", "2026-10", "bundled", 5),
            ("u1", "2026-11", "bundled", 18),
            ("u1", "2026-11", "own", 13),
            ("u2", "2026-11", "bundled", 17),
        }
        # Then each batch of the ledger adds to this month's, in its own transaction.
        now = ledger.month_key(datetime.now(UTC))
        call = ledger.CallRecord(
            "a", "u1", "pro", "openai", "m", "own", False, 1, 2, 3, 4, 200, "ok", 1
        )
        ledger.record(make_session_factory(engine), [call, call])
        ledger.record(make_session_factory(engine), [call])
        assert ("u1", now, "own", 30 + (13 if now == "2026-11" else 0)) in months()
    finally:
        engine.dispose()
