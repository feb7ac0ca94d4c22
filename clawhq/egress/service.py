"""Running the forward proxy in ``clawhq serve``: on the egress network's gateway, so only
agents (and the host) reach it.

It is started with the app and, while it cannot listen (the engine was away, so the egress
network's gateway is not known yet, or its port is taken), tried again every few seconds: a
proxy that cannot listen lets nobody out, which is the safe way to fail, and it comes up by
itself once it can. Its state is what ``GET /health`` says as ``egressProxy``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable, Sequence

from clawhq.db.loop_reads import LoopReads
from clawhq.egress.policy import patterns_for
from clawhq.egress.proxy import EgressAgent, EgressProxy, Identify
from clawhq.observability.metrics import Metrics
from clawhq.services.agent_identity import token_holder
from clawhq.settings import Settings
from clawhq.status import LISTENING

log = logging.getLogger("clawhq.egress")

#: Seconds between tries while the proxy cannot listen.
RETRY_SECONDS = 5.0


def identifier(reads: LoopReads, operator_hosts: Sequence[str]) -> Identify:
    """The proxy's ``identify``: token -> the agent, its policy and its allowed hosts."""

    async def identify(token: str) -> EgressAgent | None:
        row = await token_holder(reads, token)
        if row is None:
            return None
        channels = row["channels"]
        if isinstance(channels, str):  # a JSON column read by the raw driver
            channels = json.loads(channels)
        patterns = patterns_for(channels or (), operator_hosts)
        return EgressAgent(row["id"], row["egress_policy"], patterns)

    return identify


class EgressService:
    """The proxy of one ``clawhq serve``: :meth:`start` tries at once, then in the background
    until it listens; :meth:`aclose` stops both. ``report`` receives every new state."""

    def __init__(
        self,
        settings: Settings,
        gateway: Callable[[], str],
        reads: LoopReads,
        metrics: Metrics,
        report: Callable[[str], None],
        retry_seconds: float | None = None,
    ) -> None:
        self.settings, self._gateway, self._reads, self._metrics = settings, gateway, reads, metrics
        self._report = report
        self._retry_seconds = RETRY_SECONDS if retry_seconds is None else retry_seconds
        self.proxy: EgressProxy | None = None
        self.state = ""
        self._retrying: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if not await self._try():
            self._retrying = asyncio.create_task(self._retry(), name="clawhq-egress-retry")

    async def aclose(self) -> None:
        if self._retrying is not None:
            self._retrying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retrying
        if self.proxy is not None:
            await self.proxy.aclose()

    async def _retry(self) -> None:
        while True:
            await asyncio.sleep(self._retry_seconds)
            try:
                if await self._try():
                    return
            except Exception:  # keep trying: the proxy is what lets allowlist agents out
                log.exception("egress proxy: starting it failed")

    async def _try(self) -> bool:
        proxy, state = await self._listen(self._gateway())
        self.proxy = proxy
        if state != self.state:
            self.state = state
            self._report(state)
            if proxy is None:
                log.error(
                    "egress proxy %s: agents under the allowlist policy reach nothing outside "
                    "ClawHQ until it listens (tried again every %gs)",
                    state,
                    self._retry_seconds,
                )
        return proxy is not None

    @property
    def _port(self) -> int:
        return self.settings.egress_proxy_port

    async def _listen(self, gateway: str) -> tuple[EgressProxy | None, str]:
        if not gateway:
            return None, "not listening: the egress network's gateway is not known yet (engine)"
        metrics, settings = self._metrics, self.settings

        def record(agent_id: str, destination: str, verdict: str) -> None:
            metrics.egress_connections.labels(verdict).inc()

        proxy = EgressProxy(
            identifier(self._reads, settings.egress_allow),
            settings.agent_egress_deny,
            record=record,
            idle_seconds=settings.proxy_idle_seconds,
        )
        try:
            await proxy.start(gateway, self._port)
        except OSError as exc:
            # Not str(exc): asyncio's message names the gateway's address, and /health is public.
            why = os.strerror(exc.errno) if exc.errno else type(exc).__name__
            return None, (
                f"not listening: cannot listen on port {self._port} of the egress network's "
                f"gateway ({why})"
            )
        return proxy, LISTENING
