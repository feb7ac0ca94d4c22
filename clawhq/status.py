"""An agent's lifecycle states and the moves allowed between them."""

from __future__ import annotations

from enum import StrEnum

from clawhq.errors import Conflict


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
START_FROM = frozenset({S.STOPPED, S.ERROR, S.RESTARTING})
STOP_FROM = frozenset({S.RUNNING, S.UNHEALTHY, S.DEPLOYING, S.RESTARTING, S.STOPPING, S.ERROR})


def require(current: AgentStatus, allowed: frozenset[AgentStatus], action: str) -> None:
    """Refuse an operation that cannot start from ``current``, saying why."""
    if current not in allowed:
        names = ", ".join(sorted(allowed))
        raise Conflict(
            f"cannot {action} an agent that is {current}; allowed from: {names}",
            code="invalid_state",
        )
