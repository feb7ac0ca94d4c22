"""Workspace volumes kept after their agent was deleted, for operators to list and remove.

Deleting an agent keeps its workspace volume unless ``?keepWorkspace=false``, so the user's
files outlive the container. Nothing attaches such a volume again: it stays until an operator
removes it (``clawhq workspaces prune``). Only this installation's volumes are considered (the
``clawhq.instance`` label); volumes made before that label existed are not listed.
"""

from __future__ import annotations

from sqlalchemy import select

from clawhq.db.models import Agent
from clawhq.orchestrator.lifecycle import AgentOrchestrator
from clawhq.runtime import Volume


def kept_workspaces(orchestrator: AgentOrchestrator) -> list[Volume]:
    """Workspace volumes whose agent no longer exists, oldest first."""
    orchestrator.claim()  # scope the engine to this installation
    volumes = orchestrator.runtime.list_volumes()
    with orchestrator.sessions() as session:
        agents = set(session.scalars(select(Agent.id)))
    kept = [v for v in volumes if v.agent_id and v.agent_id not in agents]
    return sorted(kept, key=lambda v: (v.created_at, v.name))


def remove_workspaces(orchestrator: AgentOrchestrator, volumes: list[Volume]) -> None:
    for volume in volumes:
        orchestrator.runtime.remove_volume(volume.name)
