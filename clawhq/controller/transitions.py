"""Every write of an agent's status, and of what goes with it, as pure changes of its row.

Nothing else in ClawHQ sets ``status``, ``last_error``, ``restart_count``, ``next_restart_at``,
``backoff_step``, ``start_deadline_at`` or ``handled_generation``: the controller calls these
functions inside its transaction, and the history (``clawhq.db.history``) records each status
change in the same flush.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from clawhq.controller.planner import StartKind, backoff_delay
from clawhq.crypto import Sealed
from clawhq.db.models import Agent
from clawhq.status import AgentStatus

S = AgentStatus
MAX_ERROR_CHARS = 1000


@dataclass(frozen=True)
class Timing:
    """The settings transitions need (from ``Settings``)."""

    start_timeout: float = 120.0
    backoff_initial: float = 10.0
    backoff_max: float = 300.0
    backoff_reset: float = 600.0
    health_path: str = "/healthz"


def set_status(agent: Agent, status: AgentStatus, now: datetime) -> None:
    if agent.status is not status:
        agent.status = status
        agent.status_changed_at = now


def set_error(agent: Agent, reason: str | None) -> None:
    agent.last_error = reason[:MAX_ERROR_CHARS] if reason else None


def acknowledge(agent: Agent) -> None:
    """The controller has acted on every operation asked for so far."""
    agent.handled_generation = agent.generation


def begin_start(agent: Agent, kind: StartKind, now: datetime, timing: Timing) -> int:
    """A start begins (``deploy``, ``start``, ``restart``); returns its attempt number.

    One the owner asked for is ``DEPLOYING`` and forgets the last failure; one the controller
    makes after a crash is ``RESTARTING`` (no restart time: it is under way) and counts.
    """
    agent.start_generation += 1
    agent.start_deadline_at = now + timedelta(seconds=timing.start_timeout)
    agent.next_restart_at = None
    if kind is StartKind.RESTART:
        agent.restart_count += 1
        set_status(agent, S.RESTARTING, now)
    else:
        set_status(agent, S.DEPLOYING, now)
        set_error(agent, None)
        agent.last_exit_code, agent.oom_killed = None, False
        agent.backoff_step = 0
    return agent.start_generation


def container_planned(
    agent: Agent, port: int, token_hashes: tuple[str, str], proxy_identity: Sealed
) -> None:
    """A new container is about to be made on ``port``; its webhook and LLM tokens and the
    proxy's identity rotate (``token_hashes``: the webhook's, the LLM's)."""
    secrets_rotated(agent, token_hashes, proxy_identity)
    agent.container_id = None
    agent.container_port = port


def secrets_rotated(agent: Agent, token_hashes: tuple[str, str], proxy_identity: Sealed) -> None:
    """The agent's container is handed new secrets for its next start: the old ones (those of
    its last start) are refused from now on."""
    agent.webhook_token_hash, agent.llm_token_hash = token_hashes
    agent.proxy_identity_ciphertext = proxy_identity.ciphertext
    agent.proxy_identity_key_id = proxy_identity.key_id


def revoke_llm_token(agent: Agent) -> None:
    """The LLM gateway refuses the agent's token from now on (a stop, a delete)."""
    agent.llm_token_hash = None


def adopt(agent: Agent, container_id: str) -> None:
    """A container made for this start but never recorded (ClawHQ died in between)."""
    agent.container_id = container_id


def container_created(
    agent: Agent, container_id: str, config: dict[str, Any], now: datetime
) -> None:
    agent.container_id = container_id
    agent.applied_config = config
    agent.deployed_at = now


def forget_container(agent: Agent) -> None:
    agent.container_id = None


def mark_running(agent: Agent, now: datetime) -> None:
    set_status(agent, S.RUNNING, now)
    agent.next_restart_at = None
    agent.start_deadline_at = None
    agent.last_healthy_at = now


def fail_start(agent: Agent, reason: str, now: datetime, *, keep_port: bool) -> None:
    """A start the owner asked for failed: ``ERROR`` with why, and no container."""
    agent.container_id = None
    revoke_llm_token(agent)
    if not keep_port:
        agent.container_port = None
    agent.start_deadline_at = None
    set_status(agent, S.ERROR, now)
    set_error(agent, reason)


def schedule_restart(
    agent: Agent,
    reason: str,
    now: datetime,
    timing: Timing,
    *,
    exit_code: int | None = None,
    oom_killed: bool | None = None,
) -> float:
    """Down against the owner's wish: ``RESTARTING`` after a backoff; returns the delay."""
    if exit_code is not None or oom_killed is not None:
        agent.last_exit_code = exit_code
        agent.oom_killed = bool(oom_killed)
    delay = _back_off(agent, now, timing)
    agent.start_deadline_at = None
    set_status(agent, S.RESTARTING, now)
    set_error(agent, reason)
    return delay


def defer_start(agent: Agent, reason: str, now: datetime, delay: float, *, counted: bool) -> None:
    """The engine could not take the start (unreachable, or still coming up): the agent waits
    for it, ``RESTARTING`` in ``delay`` seconds, with no restart counted (``counted``: the
    start was one, and is taken back) and no step added to its backoff."""
    if counted:
        agent.restart_count = max(agent.restart_count - 1, 0)
    agent.next_restart_at = now + timedelta(seconds=delay)
    agent.start_deadline_at = None
    set_status(agent, S.RESTARTING, now)
    set_error(agent, reason)


def mark_unhealthy(agent: Agent, failures: int, now: datetime, timing: Timing) -> float:
    delay = _back_off(agent, now, timing)
    set_status(agent, S.UNHEALTHY, now)
    set_error(
        agent,
        f"failed {failures} health checks in a row on {timing.health_path}; "
        f"restart in {delay:.0f}s unless it recovers",
    )
    return delay


def mark_recovered(agent: Agent, now: datetime) -> None:
    set_status(agent, S.RUNNING, now)
    agent.next_restart_at = None
    agent.last_healthy_at = now


def mark_healthy(agent: Agent, now: datetime, timing: Timing) -> None:
    """A probe passed; healthy long enough, the next crash starts the backoff over."""
    agent.last_healthy_at = now
    steady = timedelta(seconds=timing.backoff_reset)
    if agent.backoff_step and now - agent.status_changed_at >= steady:
        agent.backoff_step = 0


def begin_stop(agent: Agent, now: datetime) -> None:
    agent.next_restart_at = None
    agent.start_deadline_at = None
    set_status(agent, S.STOPPING, now)


def mark_stopped(agent: Agent, now: datetime) -> None:
    agent.next_restart_at = None
    agent.start_deadline_at = None
    set_status(agent, S.STOPPED, now)


def release_port(agent: Agent) -> None:
    agent.container_port = None


def repair_port(agent: Agent, port: int) -> None:
    agent.container_port = port


def _back_off(agent: Agent, now: datetime, timing: Timing) -> float:
    agent.backoff_step += 1
    delay = backoff_delay(agent.backoff_step, timing.backoff_initial, timing.backoff_max)
    agent.next_restart_at = now + timedelta(seconds=delay)
    return delay
