"""Scheduled backups (plans' ``backup_schedule``, docs/backups.md), run by the supervising
process every ``CLAWHQ_BACKUP_CHECK_INTERVAL``: each agent of a ``daily`` plan whose newest
scheduled backup is a day old (or who has none) gets one, and each agent keeps the newest
``backup_keep`` scheduled backups (manual, imported and ``pre_restore`` ones are the owner's
to delete)."""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from sqlalchemy import func, select

from clawhq.controller.backups import Backups
from clawhq.db.backups import AgentBackup, BackupKind, BackupStatus, RestoreStatus
from clawhq.db.models import Agent, Plan, User
from clawhq.errors import ClawHQError
from clawhq.status import DesiredState

log = logging.getLogger(__name__)

DAILY = timedelta(days=1)


class BackupSchedule:
    def __init__(self, backups: Backups, interval: float) -> None:
        self.backups = backups
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="backup-schedule", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:
                log.exception("scheduled backups")

    def tick(self, now: datetime | None = None) -> list[str]:
        """Start the backups that are due and prune; returns the agents backed up."""
        deps = self.backups.deps
        now = now or deps.clock.now()
        latest = (
            select(AgentBackup.agent_id, func.max(AgentBackup.created_at).label("at"))
            .where(
                AgentBackup.kind == BackupKind.SCHEDULED,
                AgentBackup.status != BackupStatus.FAILED,
            )
            .group_by(AgentBackup.agent_id)
            .subquery()
        )
        with deps.read_sessions() as session:
            due = session.execute(
                select(Agent.id, Plan.backup_keep, latest.c.at)
                .join(User, User.id == Agent.user_id)
                .join(Plan, Plan.name == User.plan_name)
                .outerjoin(latest, latest.c.agent_id == Agent.id)
                .where(
                    Plan.backup_schedule == "daily",
                    Agent.desired_state != DesiredState.DELETED,
                    Agent.deployed_at.is_not(None),  # a workspace exists
                )
            ).all()
        started = []
        for agent_id, keep, at in due:
            self._prune(agent_id, keep)
            if at is not None and at > now - DAILY:
                continue
            try:
                self.backups.create(agent_id, None, BackupKind.SCHEDULED)
            except ClawHQError as exc:  # busy, say: the next look tries again
                log.info("agent %s: scheduled backup not started: %s", agent_id, exc.message)
                continue
            started.append(agent_id)
        return started

    def _prune(self, agent_id: str, keep: int) -> None:
        deps = self.backups.deps
        with deps.read_sessions() as session:
            ready = session.scalars(
                select(AgentBackup)
                .where(
                    AgentBackup.agent_id == agent_id,
                    AgentBackup.kind == BackupKind.SCHEDULED,
                    AgentBackup.status == BackupStatus.READY,
                    AgentBackup.restore_status.is_distinct_from(RestoreStatus.RESTORING),
                )
                .order_by(AgentBackup.created_at.desc(), AgentBackup.id)
            ).all()
        for row in ready[keep:]:
            try:
                self.backups.delete(agent_id, row.id, None)
            except ClawHQError as exc:
                log.warning("scheduled backup %s not pruned: %s", row.id, exc.message)
