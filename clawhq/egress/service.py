"""Starting the forward proxy in ``clawhq serve``: on the egress network's gateway, so only
agents (and the host) reach it."""

from __future__ import annotations

import logging
import os

from clawhq.controller.readiness import LISTENING
from clawhq.db.loop_reads import LoopReads
from clawhq.egress.agents import identifier
from clawhq.egress.proxy import EgressProxy
from clawhq.observability.metrics import Metrics
from clawhq.settings import Settings

log = logging.getLogger("clawhq.egress")


async def start_proxy(
    settings: Settings, gateway: str, reads: LoopReads, metrics: Metrics
) -> tuple[EgressProxy | None, str]:
    """The running proxy and ``listening``, or ``None`` (logged) and ``not listening: <why>``
    when it cannot listen: agents under the allowlist policy then reach nothing outside, which
    is the safe way to fail. The state is what ``GET /health`` says as ``egressProxy``."""
    if not gateway:
        log.error("egress proxy not started: the egress network's gateway is not known yet")
        return None, "not listening: the egress network's gateway is not known"

    def record(agent_id: str, destination: str, verdict: str) -> None:
        metrics.egress_connections.labels(verdict).inc()

    proxy = EgressProxy(
        identifier(reads, settings.egress_allow),
        settings.agent_egress_deny,
        record=record,
        idle_seconds=settings.proxy_idle_seconds,
    )
    try:
        await proxy.start(gateway, settings.egress_proxy_port)
    except OSError as exc:
        log.error(
            "egress proxy cannot listen on %s:%d (%s): agents under the allowlist policy reach "
            "nothing outside ClawHQ",
            gateway,
            settings.egress_proxy_port,
            exc,
        )
        # Not str(exc): asyncio's message names the gateway's address, and /health is public.
        why = os.strerror(exc.errno) if exc.errno else type(exc).__name__
        return None, (
            f"not listening: cannot listen on port {settings.egress_proxy_port} of the egress "
            f"network's gateway ({why})"
        )
    return proxy, LISTENING
