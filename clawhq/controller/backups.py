"""Owners' and operators' backups of agents' workspaces: the entry the API and the CLI call.

Taking a backup and restoring one are jobs: the request is checked, its row written, and the
work (:mod:`.backup_jobs`) runs on a job thread while the caller polls the row. While a job
holds an agent, owners' operations on it are refused (``agent_busy``). At start-up,
:meth:`Backups.recover` fails the backups a stopped ClawHQ left ``CREATING`` (their objects
removed, their agents started again if the job had stopped them) and resumes interrupted
restores, whose ``pre_restore`` backup was taken before anything changed.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from clawhq.backups import BackupStore, Download, UploadLimits, import_upload, reseal_backup
from clawhq.controller import backup_rows as rows
from clawhq.controller.backup_jobs import BackupWork
from clawhq.controller.deps import ControllerDeps
from clawhq.controller.operations import Operations, load
from clawhq.db.backups import AgentBackup, BackupKind, BackupStatus, RestoreStatus
from clawhq.errors import BackupNotFound, ClawHQError, Conflict
from clawhq.status import DesiredState

log = logging.getLogger(__name__)


class Backups:
    def __init__(
        self,
        deps: ControllerDeps,
        operations: Operations,
        store: BackupStore,
        *,
        threads: bool = True,
        workers: int = 2,
    ) -> None:
        self.deps = deps
        self.ops = operations
        self.store = store
        self.work = BackupWork(deps, operations, store)
        self._pool = (
            concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="backup")
            if threads
            else None
        )

    # -- what owners ask ----------------------------------------------------------------

    def create(
        self, agent_id: str, owner_id: str | None, kind: BackupKind = BackupKind.MANUAL
    ) -> AgentBackup:
        """A new backup, CREATING; the job takes it (202: poll :meth:`get`)."""
        claimed = False
        try:
            with self.deps.sessions.begin() as session:
                agent = load(session, agent_id, owner_id)
                self.ops.jobs.claim(agent_id, "a backup is being taken")
                claimed = True
                row = rows.new_backup(session, agent.id, agent.user_id, kind, self._now())
                session.flush()
                session.expunge(row)
        except BaseException:
            if claimed:
                self.ops.jobs.release(agent_id)
            raise
        self._submit(agent_id, lambda: self.work.take(row.id))
        return self.get(agent_id, row.id, owner_id)

    def of_agent(self, agent_id: str, owner_id: str | None) -> list[AgentBackup]:
        with self.deps.read_sessions() as session:
            load(session, agent_id, owner_id, lock=False)
            found = session.scalars(
                select(AgentBackup)
                .where(AgentBackup.agent_id == agent_id)
                .order_by(AgentBackup.created_at.desc(), AgentBackup.id)
            ).all()
            return list(found)

    def get(self, agent_id: str, backup_id: str, owner_id: str | None) -> AgentBackup:
        with self.deps.read_sessions() as session:
            return self._owned(session, agent_id, backup_id, owner_id)

    def delete(self, agent_id: str, backup_id: str, owner_id: str | None) -> None:
        """Remove the stored object, then the row (refused while a job uses it)."""
        with self.deps.sessions.begin() as session:
            row = self._owned(session, agent_id, backup_id, owner_id, lock=True)
            busy = row.status is BackupStatus.CREATING
            if busy or row.restore_status is RestoreStatus.RESTORING:
                raise Conflict(
                    "the backup is in use by a job; retry once it is done", code="backup_busy"
                )
            self.store.delete(row.store_key)
            session.delete(row)

    def download(self, agent_id: str, backup_id: str, owner_id: str | None) -> Download:
        """The plain tar.gz, checked as it streams (opened here: a missing or foreign object
        fails before the first byte)."""
        return self.work.download(self.ready(agent_id, backup_id, owner_id))

    def import_archive(
        self, agent_id: str, owner_id: str | None, upload: Iterable[bytes]
    ) -> AgentBackup:
        """A user's tar.gz, checked and normalised as it streams, as a new READY backup; a bad
        archive raises its 4xx and leaves no row and no object."""
        with self.deps.sessions.begin() as session:
            agent = load(session, agent_id, owner_id)
            row = rows.new_backup(session, agent.id, agent.user_id, BackupKind.IMPORT, self._now())
            session.flush()
            session.expunge(row)
        limits = UploadLimits.from_settings(self.deps.settings)
        try:
            record = import_upload(
                self.store, row.store_key, self.deps.keyring, row.id, upload, limits
            )
        except BaseException:
            with contextlib.suppress(ClawHQError):
                self.store.delete(row.store_key)
            with self.deps.sessions.begin() as session:
                found = session.get(AgentBackup, row.id)
                if found is not None:
                    session.delete(found)
            raise
        with self.deps.sessions.begin() as session:
            rows.ready(self._lock(session, row.id), record, self._now())
        return self.get(agent_id, row.id, owner_id)

    def restore(self, agent_id: str, backup_id: str, owner_id: str | None) -> AgentBackup:
        """Start restoring the backup into its agent (202: poll :meth:`get`)."""
        self.ready(agent_id, backup_id, owner_id)
        claimed = False
        try:
            with self.deps.sessions.begin() as session:
                agent = load(session, agent_id, owner_id)
                self.ops.jobs.claim(agent_id, "a backup is being restored")
                claimed = True
                restart = agent.desired_state is DesiredState.RUNNING
                rows.restore_begins(self._lock(session, backup_id), restart, self._now())
        except BaseException:
            if claimed:
                self.ops.jobs.release(agent_id)
            raise
        self._submit(agent_id, lambda: self.work.restore(backup_id))
        return self.get(agent_id, backup_id, owner_id)

    def seed(self, source_agent_id: str, backup_id: str, owner_id: str, new_agent_id: str) -> None:
        """Give a new agent of the same owner the backup's workspace (a clone)."""
        row = self.ready(source_agent_id, backup_id, owner_id)
        self.ops.jobs.claim(new_agent_id, "its workspace is being cloned")
        try:
            self.work.seed(new_agent_id, row)
        finally:
            self.ops.jobs.release(new_agent_id)

    # -- operators ----------------------------------------------------------------------

    def recover(self) -> None:
        """After a restart: no backup stays CREATING, no restore stays half-done."""
        with self.deps.sessions.begin() as session:
            creating = session.scalars(
                select(AgentBackup).where(AgentBackup.status == BackupStatus.CREATING)
            ).all()
            restart: list[str] = []
            for row in creating:
                with contextlib.suppress(ClawHQError):
                    self.store.delete(row.store_key)
                rows.failed(row, "ClawHQ stopped while this backup was being taken", self._now())
                if row.restart_agent:
                    restart.append(row.agent_id)
            restoring = session.scalars(
                select(AgentBackup).where(AgentBackup.restore_status == RestoreStatus.RESTORING)
            ).all()
            resume = [(row.agent_id, row.id) for row in restoring]
        for agent_id in restart:
            with contextlib.suppress(ClawHQError):
                self.ops.start(agent_id)
        for agent_id, backup_id in resume:
            log.info("resuming the restore of backup %s into agent %s", backup_id, agent_id)
            with contextlib.suppress(ClawHQError):
                self.ops.jobs.claim(agent_id, "a backup is being restored")
                self._submit(agent_id, lambda b=backup_id: self.work.restore(b))  # type: ignore[misc]

    def all(self, agent_id: str | None = None) -> list[AgentBackup]:
        """Every backup (of one agent), newest first: the CLI's list."""
        with self.deps.read_sessions() as session:
            query = select(AgentBackup).order_by(
                AgentBackup.agent_id, AgentBackup.created_at.desc(), AgentBackup.id
            )
            if agent_id is not None:
                query = query.where(AgentBackup.agent_id == agent_id)
            return list(session.scalars(query).all())

    def prune(self, keep: int, agent_id: str | None = None) -> list[AgentBackup]:
        """Delete all but the newest ``keep`` READY backups of each agent, and every FAILED
        one; a backup a job uses is kept. Returns what was deleted."""
        doomed = prunable(self.all(agent_id), keep)
        for row in doomed:
            self.store.delete(row.store_key)
            with self.deps.sessions.begin() as session:
                found = session.get(AgentBackup, row.id)
                if found is not None:
                    session.delete(found)
        return doomed

    def reseal(self) -> tuple[int, int]:
        """Re-seal every READY backup whose data key another key sealed (key rotation):
        (resealed, left as they were because they failed a check)."""
        with self.deps.read_sessions() as session:
            stale = session.scalars(
                select(AgentBackup.id).where(
                    AgentBackup.status == BackupStatus.READY,
                    AgentBackup.key_id != self.deps.keyring.current_key_id,
                )
            ).all()
        done = failed = 0
        for backup_id in stale:
            with self.deps.sessions.begin() as session:
                row = self._lock(session, backup_id)
                try:
                    record = reseal_backup(
                        self.store,
                        row.store_key,
                        self.deps.keyring,
                        row.id,
                        expected_sha256=row.sha256,
                    )
                except ClawHQError as exc:
                    log.error("backup %s not resealed: %s", backup_id, exc)
                    failed += 1
                    continue
                if record is not None:
                    rows.resealed(row, record)
                done += 1
        return done, failed

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    # -- internals ----------------------------------------------------------------------

    def _submit(self, agent_id: str, job: Callable[[], None]) -> None:
        def run() -> None:
            try:
                job()
            except Exception:
                log.exception("backup job on agent %s", agent_id)
            finally:
                self.ops.jobs.release(agent_id)

        if self._pool is None:
            run()
        else:
            self._pool.submit(run)

    def _owned(
        self,
        session: Session,
        agent_id: str,
        backup_id: str,
        owner_id: str | None,
        *,
        lock: bool = False,
    ) -> AgentBackup:
        load(session, agent_id, owner_id, lock=lock)
        row = session.get(AgentBackup, backup_id, with_for_update=lock)
        if row is None or row.agent_id != agent_id:
            raise BackupNotFound(f"backup {backup_id} not found")
        return row

    def ready(self, agent_id: str, backup_id: str, owner_id: str | None) -> AgentBackup:
        """The backup, if it is READY (409 ``backup_not_ready`` otherwise)."""
        row = self.get(agent_id, backup_id, owner_id)
        if row.status is not BackupStatus.READY:
            raise Conflict(f"the backup is {row.status}, not READY", code="backup_not_ready")
        return row

    @staticmethod
    def _lock(session: Session, backup_id: str) -> AgentBackup:
        row = session.get(AgentBackup, backup_id, with_for_update=True)
        if row is None:
            raise BackupNotFound(f"backup {backup_id} not found")
        return row

    def _now(self) -> datetime:
        return self.deps.clock.now()


def prunable(found: Sequence[AgentBackup], keep: int) -> list[AgentBackup]:
    """Of ``found`` (by agent, newest first), what a prune keeping ``keep`` deletes: READY
    backups past the newest ``keep`` of their agent, and FAILED ones; never one a job uses."""
    kept: dict[str, int] = {}
    doomed: list[AgentBackup] = []
    for row in found:
        if row.status is BackupStatus.CREATING or row.restore_status is RestoreStatus.RESTORING:
            continue
        if row.status is BackupStatus.READY:
            kept[row.agent_id] = kept.get(row.agent_id, 0) + 1
            if kept[row.agent_id] <= keep:
                continue
        doomed.append(row)
    return doomed
