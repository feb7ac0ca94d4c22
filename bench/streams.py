"""Many streamed responses at once: how long until all are open, and each event's delay."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx

#: Reads the sender's timestamp out of a streamed line; ``None``: the line carries none.
SentAt = Callable[[str], float | None]


async def open_streams(
    request: dict[str, Any], count: int, expected: int, sent_at: SentAt
) -> tuple[float, list[float]]:
    """Open ``count`` streams of ``request`` (``httpx.AsyncClient.stream`` arguments) at once.

    Returns the time until every stream has its first event, and the delay of each event
    sent after that (the steady state), from its sender's clock to here. Every stream must
    carry ``expected`` events.
    """
    sent_and_seen: list[tuple[float, float]] = []
    first_seen: list[float] = []
    limits = httpx.Limits(max_connections=count + 10)
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def one() -> int:
            seen = 0
            async with client.stream(**request) as reply:
                reply.raise_for_status()
                async for line in reply.aiter_lines():
                    sent = sent_at(line)
                    if sent is None:
                        continue
                    if seen == 0:
                        first_seen.append(time.perf_counter() - started)
                    sent_and_seen.append((sent, time.time()))
                    seen += 1
            return seen

        opened_at = time.time()
        seen = await asyncio.gather(*(one() for _ in range(count)))
    assert all(n == expected for n in seen), f"streams ended early: {sorted(seen)[:5]}"
    all_open = max(first_seen)
    steady = [got - sent for sent, got in sent_and_seen if sent > opened_at + all_open]
    return all_open, steady
