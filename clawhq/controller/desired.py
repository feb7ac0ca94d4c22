"""What is wanted of an agent: the only writes of its desired state, one per kind of request.

Operations and rollouts call these inside their own transaction, then queue the agent; the
controller compares ``generation`` with ``handled_generation`` to see there is something new.
"""

from __future__ import annotations

from clawhq.controller import transitions
from clawhq.db.models import Agent
from clawhq.status import DesiredState


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
    transitions.revoke_llm_token(agent)  # at once: the gateway refuses its next call
    _bump(agent)


def pin_image(agent: Agent, image: str | None) -> None:
    """Run ``image`` (None: the plan's, else ``CLAWHQ_AGENT_IMAGE``) from its next container
    on: drift until then."""
    agent.image = image


def request_delete(agent: Agent, *, keep_workspace: bool) -> None:
    agent.desired_state = DesiredState.DELETED
    transitions.revoke_llm_token(agent)
    agent.keep_workspace = keep_workspace
    _bump(agent)
