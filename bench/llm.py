"""10-13. The LLM gateway (``/llm/openai/…``): a streamed chat completion through ClawHQ vs
straight to the upstream, same machine, same run, interleaved.

The upstream is a lean stand-in defined here (a bare ASGI app on uvicorn, in its own process:
``python -m bench.llm HOST PORT``) speaking OpenAI's Chat Completions SSE: a role chunk, the
content chunks (each with the time it was sent), a finish chunk, the usage chunk when asked
(``stream_options.include_usage``, with ``"usage":null`` in every chunk before it, as OpenAI
writes them) and ``[DONE]``. The request's ``metadata`` (``{"chunks": "N", "every": "S"}``)
chooses the length and the pace: a body field the gateway passes on (the query it passes is an
allowlist). The suite's stand-in (tests/standins/llm.py) is a ThreadingHTTPServer whose stream
length is set on the object, not per request; this one costs less per chunk than ClawHQ does,
so it is not the bottleneck of either side.

ClawHQ runs on the in-memory engine (``BENCH_FAKE_ENGINE=1``) with one RUNNING openai agent
that has its own key; the agent's LLM token is set in the database (only its digest is
stored, and the gateway reads it on every call), so the gateway path is the real one: the
token lookup, the key opened, the upstream call, the meter, the ledger row.

``BENCH_LLM_BUDGET=1`` gives the bench plan a (never reached) monthly budget that counts own
keys, so every call also takes the budget's path (its reservation, when there is one);
``BENCH_LLM_DB=postgresql`` runs ClawHQ on PostgreSQL instead of SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.harness import (
    Database,
    Server,
    free_port,
    median,
    percentile,
    process_cpu_seconds,
    wait_until,
    workdir,
)
from bench.streams import open_streams

Row = dict[str, object]
PATH = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "hi"}]
USAGE = {"prompt_tokens": 31, "completion_tokens": 12, "total_tokens": 43}

# -- the stand-in upstream -----------------------------------------------------------------

_HEAD = (
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,'
    b'"model":"gpt-5","system_fingerprint":"fp_bench","choices":[{"index":0,"delta":'
)


def _chunk(delta: bytes, finish: bytes, usage: bool) -> bytes:
    tail = b',"usage":null' if usage else b""
    return _HEAD + delta + b',"logprobs":null,"finish_reason":' + finish + b"}]" + tail + b"}\n\n"


async def _read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += bytes(message.get("body", b""))
        if not message.get("more_body"):
            return body


async def standin(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """POST /v1/chat/completions, streamed: ``metadata.chunks`` content chunks
    ``metadata.every`` seconds apart."""
    if scope["type"] != "http":  # served with lifespan="off"
        return
    body = await _read_body(receive)
    if scope["path"] != PATH:
        ok = scope["path"] == "/healthz"
        await send({"type": "http.response.start", "status": 200 if ok else 404, "headers": []})
        await send({"type": "http.response.body", "body": b"ok" if ok else b""})
        return
    request = json.loads(body or b"{}")
    pace = request.get("metadata") or {}
    chunks, every = int(pace.get("chunks", "20")), float(pace.get("every", "0"))
    usage = (request.get("stream_options") or {}).get("include_usage") is True
    headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})

    async def write(data: bytes) -> None:
        await send({"type": "http.response.body", "body": data, "more_body": True})

    await write(_chunk(b'{"role":"assistant","content":"","refusal":null}', b"null", usage))
    for _ in range(chunks):
        await write(_chunk(b'{"content":"%r"}' % time.time(), b"null", usage))
        if every:
            await asyncio.sleep(every)
    await write(_chunk(b"{}", b'"stop"', usage))
    if usage:
        last = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "choices": []}
        await write(b"data: %s\n\n" % json.dumps({**last, "usage": USAGE}).encode())
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


# -- ClawHQ and the stand-in, one run ------------------------------------------------------


@dataclass
class Setup:
    server: Server
    standin_pid: int
    direct: str  # the stand-in's chat completions URL
    through: str  # the same through ClawHQ's gateway
    direct_headers: dict[str, str]
    through_headers: dict[str, str]
    db: Database

    def side(self, through: bool) -> tuple[str, dict[str, str]]:
        if through:
            return self.through, self.through_headers
        return self.direct, self.direct_headers

    def ledger_rows(self) -> int:
        from sqlalchemy import text

        from clawhq.db.engine import create_db_engine

        engine = create_db_engine(self.db.url)
        with engine.connect() as conn:
            count = int(conn.execute(text("SELECT count(*) FROM llm_calls")).scalar_one())
        engine.dispose()
        return count


@contextlib.contextmanager
def llm_gateway() -> Iterator[Setup]:
    """The stand-in in its own process, ClawHQ pointed at it, one RUNNING openai agent."""
    from sqlalchemy import update

    from clawhq.credentials import LLM_TOKEN_PREFIX, hash_token, new_token
    from clawhq.db.engine import create_db_engine
    from clawhq.db.models import Agent, Plan

    port = free_port()
    upstream = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.llm", "127.0.0.1", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        probe = httpx.Client()

        def up() -> bool:
            try:
                return probe.get(f"{upstream}/healthz").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(up, 30, "the LLM stand-in", every=0.05)
        with (
            workdir() as tmp,
            Database.create(os.environ.get("BENCH_LLM_DB", "sqlite"), Path(tmp)) as db,
            Server(
                db,
                Path(tmp),
                llm_upstream_openai=upstream,
                llm_calls_per_agent="10000",
                env={"BENCH_FAKE_ENGINE": "1"},
            ) as server,
        ):
            _, headers = server.user()
            body = {
                "name": "llm-bench",
                "modelProvider": "openai",
                "model": "gpt-5",
                "apiKey": "sk-bench-000000",
            }
            reply = server.client.post("/api/agents", json=body, headers=headers)
            reply.raise_for_status()
            agent_id = reply.json()["id"]
            server.client.post(f"/api/agents/{agent_id}/deploy", headers=headers)
            wait_until(lambda: server.status(agent_id, headers)["status"] == "RUNNING", 30, "up")
            # The container's token is only in its env, the database holds its digest: put
            # one we know in its place (the gateway looks the digest up on every call).
            token = new_token(LLM_TOKEN_PREFIX)
            engine = create_db_engine(db.url)
            with engine.begin() as conn:
                conn.execute(
                    update(Agent)
                    .where(Agent.id == agent_id)
                    .values(llm_token_hash=hash_token(token))
                )
                if os.environ.get("BENCH_LLM_BUDGET") == "1":
                    conn.execute(
                        update(Plan)
                        .where(Plan.name == "bench")
                        .values(monthly_token_budget=10**15, budget_own_keys=True)
                    )
            engine.dispose()
            yield Setup(
                server,
                proc.pid,
                upstream + PATH,
                f"{server.base}/llm/openai{PATH}",
                {"Authorization": "Bearer sk-bench-000000"},
                {"Authorization": f"Bearer {token}"},
                db,
            )
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _request(stream_usage: bool = True, chunks: int = 20, every: float = 0) -> dict[str, Any]:
    pace = {"chunks": str(chunks), "every": str(every)}
    body: dict[str, Any] = {"model": "gpt-5", "messages": MESSAGES, "stream": True}
    body["metadata"] = pace
    if stream_usage:
        body["stream_options"] = {"include_usage": True}
    return body


@dataclass
class Streamed:
    first_token: float
    total: float
    size: int


def _stream_once(
    client: httpx.Client,
    setup: Setup,
    through: bool,
    chunks: int,
    stream_usage: bool = True,
) -> Streamed:
    """One streamed completion; the time to the first content delta, to the end, its bytes."""
    url, headers = setup.side(through)
    started = time.perf_counter()
    first, size, tail = 0.0, 0, b""
    with client.stream(
        "POST",
        url,
        json=_request(stream_usage, chunks),
        headers=headers,
    ) as reply:
        assert reply.status_code == 200, reply.read()[:300]
        for raw in reply.iter_raw():
            if not first and b'{"content":"1' in tail[-16:] + raw:
                first = time.perf_counter() - started
            size += len(raw)
            tail = raw[-32:]
    total = time.perf_counter() - started
    assert tail.endswith(b"data: [DONE]\n\n"), tail
    return Streamed(first or total, total, size)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def first_token(quick: bool) -> list[Row]:
    """10. LLM gateway: time to first token of a streamed chat completion, through vs direct."""
    rounds, chunks = (100, 20) if quick else (400, 20)
    with llm_gateway() as setup:
        client = httpx.Client(timeout=30)
        for n in range(20):  # warm both paths (connections, caches)
            _stream_once(client, setup, n % 2 == 0, chunks)
        runs: dict[bool, list[Streamed]] = {False: [], True: []}
        for n in range(rounds):  # interleaved, each side first every other round
            for through in (n % 2 == 0, n % 2 == 1):
                runs[through].append(_stream_once(client, setup, through, chunks))
    rows: list[Row] = []
    for what, pick in (("first token", "first_token"), ("whole answer", "total")):
        mine = [getattr(r, pick) for r in runs[True]]
        bare = [getattr(r, pick) for r in runs[False]]
        p50, d50 = median(mine), median(bare)
        p99, d99 = percentile(mine, 0.99), percentile(bare, 0.99)
        rows.append(
            {
                "benchmark": f"LLM streamed completion ({chunks} chunks), {what} p50 / p99",
                "clawhq": f"{_ms(p50)} / {_ms(p99)}",
                "raw docker": f"{_ms(d50)} / {_ms(d99)} direct",
                "ratio": f"{p50 / d50:.2f} (+{(p50 - d50) * 1000:.2f} ms)",
                "target": "p50 <= +3 ms" if pick == "first_token" else "reference",
                "n": rounds,
            }
        )
    return rows


def _rate(runs: list[Streamed], chunks: int) -> tuple[float, float]:
    """Median chunks/s and MB/s of long streams."""
    return median([chunks / r.total for r in runs]), median([r.size / r.total / 1e6 for r in runs])


def stream_throughput(quick: bool) -> list[Row]:
    """11. LLM gateway: throughput of a long streamed completion, through vs direct."""
    rounds, chunks = (4, 5000) if quick else (12, 5000)
    with llm_gateway() as setup:
        client = httpx.Client(timeout=60)
        kinds = {"asks for usage": True, "usage added and stripped": False}
        for stream_usage in kinds.values():  # warm
            _stream_once(client, setup, False, chunks, stream_usage)
            _stream_once(client, setup, True, chunks, stream_usage)
        runs: dict[tuple[str, bool], list[Streamed]] = {}
        for n in range(rounds):
            for kind, stream_usage in kinds.items():
                for through in (n % 2 == 0, n % 2 == 1):
                    got = _stream_once(client, setup, through, chunks, stream_usage)
                    runs.setdefault((kind, through), []).append(got)
    rows: list[Row] = []
    for kind in kinds:
        (mine, mine_mb), (bare, bare_mb) = (
            _rate(runs[(kind, True)], chunks),
            _rate(runs[(kind, False)], chunks),
        )
        main = kind == "asks for usage"
        rows.append(
            {
                "benchmark": f"LLM stream of {chunks} chunks, client {kind}",
                "clawhq": f"{mine:,.0f} chunks/s, {mine_mb:.1f} MB/s",
                "raw docker": f"{bare:,.0f} chunks/s, {bare_mb:.1f} MB/s direct",
                "ratio": round(mine / bare, 2),
                "target": ">= 0.9" if main else "reference",
                "n": rounds,
            }
        )
    return rows


def stream_cpu(quick: bool) -> list[Row]:
    """12. LLM gateway: ClawHQ's CPU per 1,000 streamed chunks (the stand-in's for reference)."""
    long_rounds, chunks = (4, 5000) if quick else (12, 5000)
    paced_streams, paced_chunks, every = (20, 100, 0.02) if quick else (50, 200, 0.02)
    # (case, through) -> [ClawHQ's CPU seconds, the stand-in's, chunks]
    spent: dict[tuple[str, bool], list[float]] = {}
    with llm_gateway() as setup:
        client = httpx.Client(timeout=60)
        _stream_once(client, setup, True, chunks)  # warm
        pids = (setup.server.pid, setup.standin_pid)

        def measure(case: str, through: bool, run: Callable[[], object], count: int) -> None:
            before = [process_cpu_seconds(pid) for pid in pids]
            run()
            after = [process_cpu_seconds(pid) for pid in pids]
            got = spent.setdefault((case, through), [0.0, 0.0, 0.0])
            got[0] += after[0] - before[0]
            got[1] += after[1] - before[1]
            got[2] += count

        for n in range(long_rounds):  # interleaved
            for through in (n % 2 == 0, n % 2 == 1):

                def long(through: bool = through) -> object:
                    return _stream_once(client, setup, through, chunks)

                measure("long", through, long, chunks)
        for through in (False, True, False, True)[: 2 if quick else 4]:

            def paced(through: bool = through) -> object:
                return asyncio.run(_streams(setup, through, paced_streams, paced_chunks, every))

            measure("paced", through, paced, paced_streams * paced_chunks)
    rows: list[Row] = []
    for case, what in (
        ("long", f"one stream of {chunks} chunks, as fast as they come"),
        ("paced", f"{paced_streams} streams at once, a chunk every {every * 1000:.0f} ms each"),
    ):
        server, standin, count = spent[(case, True)]
        _, standin_direct, _ = spent[(case, False)]
        thousands = count / 1000
        rows.append(
            {
                "benchmark": f"LLM gateway CPU per 1,000 chunks: {what}",
                "clawhq": f"{server / thousands * 1000:.1f} ms ClawHQ",
                "raw docker": f"stand-in {standin_direct / thousands * 1000:.1f} ms (direct), "
                f"{standin / thousands * 1000:.1f} ms (through)",
                "ratio": round(server / max(standin_direct, 1e-9), 2),
                "target": "reference",
                "n": int(count),
            }
        )
    return rows


def _content_sent_at(line: str) -> float | None:
    """The stand-in puts its send time in each content chunk (``{"content":"1…"``)."""
    at = line.find('{"content":"1')
    return None if at < 0 else float(line[at + 12 : line.index('"', at + 12)])


async def _streams(
    setup: Setup, through: bool, count: int, chunks: int, every: float
) -> tuple[float, list[float]]:
    """``count`` streamed completions at once, through ClawHQ or straight to the stand-in."""
    url, headers = setup.side(through)
    request = {
        "method": "POST",
        "url": url,
        "json": _request(True, chunks, every),
        "headers": headers,
    }
    return await open_streams(request, count, chunks, _content_sent_at)


def concurrent_llm_streams(quick: bool) -> list[Row]:
    """13. LLM gateway: 100 concurrent streamed completions, per-chunk delay vs direct."""
    count, chunks, every, rounds = (100, 40, 0.05, 1) if quick else (100, 100, 0.05, 3)
    opened: dict[bool, list[float]] = {False: [], True: []}
    delays: dict[bool, list[float]] = {False: [], True: []}
    with llm_gateway() as setup:
        asyncio.run(_streams(setup, True, 10, 5, 0.01))  # warm
        wait_until(lambda: setup.ledger_rows() >= 10, 30, "the warm-up's ledger rows")
        before = setup.ledger_rows()
        for n in range(rounds):
            for through in (n % 2 == 0, n % 2 == 1):
                all_open, steady = asyncio.run(_streams(setup, through, count, chunks, every))
                opened[through].append(all_open)
                delays[through] += steady
        expected = before + count * rounds
        wait_until(lambda: setup.ledger_rows() >= expected, 30, "the ledger rows")
        rows_written = setup.ledger_rows() - before
    mine, bare = delays[True], delays[False]
    return [
        {
            "benchmark": f"{count} concurrent LLM streams ({chunks} chunks, one every "
            f"{every * 1000:.0f} ms): all complete, all have a first token",
            "clawhq": f"{median(opened[True]) * 1000:.0f} ms, {rows_written} ledger rows",
            "raw docker": f"{median(opened[False]) * 1000:.0f} ms direct",
            "ratio": round(median(opened[True]) / median(opened[False]), 2),
            "target": "all complete",
            "n": count * rounds,
        },
        {
            "benchmark": f"{count} concurrent LLM streams: per-chunk delay p50 / p99",
            "clawhq": f"{median(mine) * 1000:.1f} / {percentile(mine, 0.99) * 1000:.1f} ms",
            "raw docker": f"{median(bare) * 1000:.1f} / {percentile(bare, 0.99) * 1000:.1f} ms "
            "direct",
            "ratio": round(percentile(mine, 0.99) / max(percentile(bare, 0.99), 1e-4), 2),
            "target": "p99 < 100 ms",
            "n": len(mine),
        },
    ]


if __name__ == "__main__":  # python -m bench.llm HOST PORT: the stand-in upstream
    import uvicorn

    uvicorn.run(
        standin,
        host=sys.argv[1],
        port=int(sys.argv[2]),
        log_config=None,
        access_log=False,
        lifespan="off",
    )
