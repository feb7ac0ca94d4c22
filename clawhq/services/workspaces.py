"""Workspace volumes kept after their agent was deleted, for operators to list and remove.

Deleting an agent keeps its workspace volume unless ``?keepWorkspace=false``, so the user's
files outlive the container. Nothing attaches such a volume again: it stays until an operator
removes it (``clawhq workspaces prune``). Only this installation's volumes are considered (the
``clawhq.instance`` label); volumes made before that label existed are not listed.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from clawhq.db.models import Agent
from clawhq.runtime import Volume
from clawhq.runtime.base import VolumeStore


def kept_workspaces(volumes: VolumeStore, sessions: sessionmaker[Session]) -> list[Volume]:
    """Workspace volumes whose agent no longer exists, oldest first (this installation's)."""
    found = volumes.list_volumes()
    with sessions() as session:
        agents = set(session.scalars(select(Agent.id)))
    kept = [v for v in found if v.agent_id and v.agent_id not in agents]
    return sorted(kept, key=lambda v: (v.created_at, v.name))


def remove_workspaces(volumes: VolumeStore, kept: list[Volume]) -> None:
    for volume in kept:
        volumes.remove_volume(volume.name)
