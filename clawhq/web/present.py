"""How an agent's state reads on a page: a label, a tone, and why it is down (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from clawhq.api.schemas import AgentPublic
from clawhq.status import AgentStatus

S = AgentStatus
_TONES = {
    S.RUNNING: "ok",
    S.DEPLOYING: "busy",
    S.STOPPING: "busy",
    S.RESTARTING: "warn",
    S.UNHEALTHY: "warn",
    S.ERROR: "bad",
    S.STOPPED: "idle",
}
_LABELS = {
    S.RUNNING: "Running",
    S.DEPLOYING: "Deploying",
    S.STOPPING: "Stopping",
    S.RESTARTING: "Restarting",
    S.UNHEALTHY: "Unhealthy",
    S.ERROR: "Failed",
    S.STOPPED: "Stopped",
}
#: Where a status says the agent is down against its owner's wish (or failed to come up).
DOWN = frozenset({S.ERROR, S.RESTARTING, S.UNHEALTHY})


@dataclass(frozen=True)
class Condition:
    status: str
    label: str
    tone: str
    #: Why it is down, in plain words (None: nothing to explain).
    why: str | None
    oom: bool


def condition(agent: AgentPublic) -> Condition:
    status = AgentStatus(agent.status)
    why = agent.last_error if status in DOWN or (status is S.STOPPED and agent.last_error) else None
    if why is None and status in DOWN:
        why = "no reason recorded yet"
    oom = bool(agent.oom_killed) and why is not None
    return Condition(status.value, _LABELS[status], _TONES[status], why, oom)


def can(agent: AgentPublic) -> dict[str, bool]:
    """Which lifecycle buttons make sense now (the API decides; this only hides the rest)."""
    status = AgentStatus(agent.status)
    return {
        "deploy": status in {S.STOPPED, S.ERROR, S.RUNNING, S.UNHEALTHY},
        "start": status in {S.STOPPED, S.ERROR, S.RESTARTING, S.STOPPING},
        "stop": status in {S.RUNNING, S.UNHEALTHY, S.DEPLOYING, S.RESTARTING, S.ERROR},
        "open": status is S.RUNNING,
    }
