"""What is wanted of an agent: the only writes of its desired state, one per kind of request.

Operations and rollouts call these inside their own transaction, then queue the agent; the
controller compares ``generation`` with ``handled_generation`` to see there is something new.
"""

from __future__ import annotations

from clawhq.db.models import Agent
from clawhq.status import DesiredState


def revoke_llm_token(agent: Agent) -> None:
    """The LLM gateway refuses the agent's token from now on (at once: the next call)."""
    agent.llm_token_hash = None


def _bump(agent: Agent) -> None:
    agent.generation += 1


def request_recreate(agent: Agent) -> None:
    """Run, in a new container made from the current spec (a deploy, a rollout step)."""
    agent.desired_state = DesiredState.RUNNING
    _bump(agent)
    agent.recreate_generation = agent.generation


def request_start(agent: Agent) -> None:
    """Run, in the existing container when it is up to date."""
    agent.desired_state = DesiredState.RUNNING
    _bump(agent)


def request_stop(agent: Agent) -> None:
    agent.desired_state = DesiredState.STOPPED
    revoke_llm_token(agent)
    _bump(agent)


def request_delete(agent: Agent, *, keep_workspace: bool) -> None:
    agent.desired_state = DesiredState.DELETED
    revoke_llm_token(agent)
    agent.keep_workspace = keep_workspace
    _bump(agent)
