"""An agent's lifecycle states and the moves allowed between them; the egress proxy's state."""

from __future__ import annotations

from enum import StrEnum

from clawhq.errors import Conflict

#: The egress proxy's state when it listens (``Parts.egress_proxy``, ``GET /health``).
LISTENING = "listening"


class AgentStatus(StrEnum):
    """Where an agent stands. Stored in the database and shown by the API as is."""

    STOPPED = "STOPPED"
    DEPLOYING = "DEPLOYING"
    RUNNING = "RUNNING"
    UNHEALTHY = "UNHEALTHY"
    RESTARTING = "RESTARTING"
    STOPPING = "STOPPING"
    ERROR = "ERROR"


class DesiredState(StrEnum):
    """What the agent's owner asked for; the supervisor converges the engine towards it."""

    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
    DELETED = "DELETED"


S = AgentStatus

#: The states each operation may start from.
DEPLOY_FROM = frozenset({S.STOPPED, S.ERROR, S.RUNNING, S.UNHEALTHY})
#: A start during a stop is taken: the controller starts the agent again once it has stopped.
START_FROM = frozenset({S.STOPPED, S.STOPPING, S.ERROR, S.RESTARTING})
STOP_FROM = frozenset({S.RUNNING, S.UNHEALTHY, S.DEPLOYING, S.RESTARTING, S.STOPPING, S.ERROR})


def require(current: AgentStatus, allowed: frozenset[AgentStatus], action: str) -> None:
    """Refuse an operation that cannot start from ``current``, saying why."""
    if current not in allowed:
        names = ", ".join(sorted(allowed))
        raise Conflict(
            f"cannot {action} an agent that is {current}; allowed from: {names}",
            code="invalid_state",
        )


def describe_transition(
    old: AgentStatus | None, new: AgentStatus, reason: str | None, waiting: bool
) -> tuple[str, str]:
    """The history entry (kind, message) for a status change, as the agent's owner reads it.

    ``waiting`` tells a RESTARTING agent waiting out its backoff (it crashed) from one being
    restarted right now.
    """
    reason = reason or ""
    if new is S.DEPLOYING:
        return "deploying", "deploy or start requested"
    if new is S.RUNNING:
        if old is S.RESTARTING:
            return "restarted", "healthy again after a restart"
        if old is S.UNHEALTHY:
            return "recovered", "health checks pass again"
        return "started", "the agent answers its health checks"
    if new is S.RESTARTING:
        return ("crashed", reason) if waiting else ("restarting", "restarting now")
    if new is S.UNHEALTHY:
        return "unhealthy", reason
    if new is S.STOPPING:
        return "stopping", "stop requested"
    if new is S.STOPPED:
        return "stopped", "the agent is stopped"
    return "failed", reason
