"""The work of a backup and of a restore, on a job thread (:mod:`.backups` queues them).

**Consistency: a short stop.** A running agent is stopped through the controller (an
operation like the owner's, so its status, secrets and port follow the usual rules), its
volume is read while no process writes to it, and it is started again: OpenClaw's SQLite
databases and its session files are copied as they are at rest, never half-written. The read
streams end to end — the engine's tar (``WorkspaceArchives.export_volume``) → gzip → seal →
the store — and never holds more than a chunk.

**A restore keeps the previous workspace until it succeeded.** Before anything changes, the
whole backup is read once and verified (a corrupt one is refused, the agent untouched). The
agent is stopped, the workspace as it is now is sealed as a ``pre_restore`` backup (in the
store, so it survives a crash of ClawHQ, and the owner can restore it to undo), the agent's
containers are removed (its next start makes a new one, as after a long stop), and the volume
is replaced by the backup's files. If that fails, or the agent does not come up healthy on
them, the ``pre_restore`` backup is put back the same way and the agent started as before.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from datetime import datetime

from sqlalchemy.orm import Session

from clawhq.backups import BackupRecord, BackupStore, Download, store_backup
from clawhq.backups.archive import gzip_stream
from clawhq.controller import backup_rows as rows
from clawhq.controller.deps import ControllerDeps
from clawhq.controller.operations import Operations
from clawhq.controller.spec import volume_name
from clawhq.db.backups import AgentBackup, BackupKind
from clawhq.db.models import Agent
from clawhq.errors import ClawHQError, EngineError
from clawhq.runtime import labels
from clawhq.runtime.base import ContainerSpec
from clawhq.status import AgentStatus, DesiredState

log = logging.getLogger(__name__)

S = AgentStatus
POLL_SECONDS = 0.2
#: What the agent may take beyond CLAWHQ_STOP_TIMEOUT / CLAWHQ_START_TIMEOUT.
MARGIN_SECONDS = 30.0


class RestoreFailed(ClawHQError):
    status = 500
    code = "restore_failed"


class BackupWork:
    """Takes backups and restores them; each method runs one whole job and records it."""

    def __init__(self, deps: ControllerDeps, operations: Operations, store: BackupStore) -> None:
        self.deps = deps
        self.ops = operations
        self.store = store

    # -- taking a backup ----------------------------------------------------------------

    def take(self, backup_id: str) -> None:
        """Stop the agent if it runs, seal its workspace, start it again; the row ends READY,
        or FAILED with nothing stored."""
        row = self._row(backup_id)
        restart = row.restart_agent or self._wants_running(row.agent_id)
        try:
            self._hold(backup_id, restart)
            self._stopped(row.agent_id)
            record = self.seal(row)
        except Exception as exc:
            log.warning("backup %s of agent %s failed: %s", backup_id, row.agent_id, exc)
            with contextlib.suppress(ClawHQError):
                self.store.delete(row.store_key)
            self._finish(backup_id, error=_describe(exc))
        else:
            self._finish(backup_id, record=record)
        finally:
            if restart:
                self._start(row.agent_id)

    def seal(self, row: AgentBackup) -> BackupRecord:
        """The agent's workspace, as its volume holds it now, sealed under ``row``'s key."""
        with self.deps.sessions() as session:
            agent = self._agent(session, row.agent_id)
            image = self.deps.specs.image_of(agent, session)
        settings = self.deps.settings
        tar = self.deps.runtime.export_volume(
            volume_name(row.agent_id), image, settings.agent_workspace_path
        )
        try:
            return store_backup(self.store, row.store_key, self.deps.keyring, row.id, _gz(tar))
        finally:
            close = getattr(tar, "close", None)
            if close is not None:
                close()

    # -- restoring ----------------------------------------------------------------------

    def restore(self, backup_id: str) -> None:
        """Replace the agent's workspace by the backup's (module docstring); resumable."""
        row = self._row(backup_id)
        agent_id = row.agent_id
        try:
            self.verify(row)
            self._stopped(agent_id)
            safety = self._safety(row)
            self._replace(agent_id, row, safety)
            if row.restart_agent:
                self._start_healthy(agent_id, safety)
        except Exception as exc:
            log.warning("restore of %s into agent %s failed: %s", backup_id, agent_id, exc)
            with self.deps.sessions.begin() as session:
                rows.restore_failed(self._lock(session, backup_id), _describe(exc), self._now())
        else:
            with self.deps.sessions.begin() as session:
                rows.restore_done(self._lock(session, backup_id), self._now())
        finally:
            if row.restart_agent and not self._wants_running(agent_id):
                self._start(agent_id)

    def verify(self, row: AgentBackup) -> None:
        """Read the whole backup once, checking every tag and the recorded SHA-256."""
        for _ in self.download(row):
            pass

    def download(self, row: AgentBackup) -> Download:
        keyring = self.deps.keyring
        return Download(self.store, row.store_key, keyring, row.id, expected_sha256=row.sha256)

    def seed(self, agent_id: str, row: AgentBackup) -> None:
        """Give a new agent (no container yet) the backup's workspace."""
        self.verify(row)
        self.deps.runtime.import_volume(self._spec(agent_id), self.download(row))

    def _safety(self, row: AgentBackup) -> AgentBackup:
        """The ``pre_restore`` backup of the workspace as it is (made once per restore)."""
        if row.restore_safety_id is not None:
            found = self._row(row.restore_safety_id)
            if found.sha256 is not None:
                return found
        with self.deps.sessions.begin() as session:
            safety = rows.new_backup(
                session, row.agent_id, row.user_id, BackupKind.PRE_RESTORE, self._now()
            )
        try:
            record = self.seal(safety)
        except Exception as exc:
            with contextlib.suppress(ClawHQError):
                self.store.delete(safety.store_key)
            self._finish(safety.id, error=_describe(exc))
            raise RestoreFailed(
                f"the workspace as it is could not be saved first ({_describe(exc)}); "
                "nothing was changed"
            ) from None
        self._finish(safety.id, record=record)
        with self.deps.sessions.begin() as session:
            rows.restore_safety(self._lock(session, row.id), safety.id)
        return self._row(safety.id)

    def _replace(self, agent_id: str, row: AgentBackup, safety: AgentBackup) -> None:
        self._remove_containers(agent_id)
        try:
            self.deps.runtime.import_volume(self._spec(agent_id), self.download(row))
        except Exception as exc:
            self._put_back(agent_id, safety)
            raise RestoreFailed(
                f"{_describe(exc)}; the previous workspace is back (backup {safety.id})"
            ) from None

    def _start_healthy(self, agent_id: str, safety: AgentBackup) -> None:
        """Start the agent and wait for it to answer healthy, else put the safety back."""
        self._start(agent_id)
        status = self._settled(agent_id, {S.RUNNING, S.ERROR, S.RESTARTING, S.UNHEALTHY})
        if status is S.RUNNING:
            return
        self._stopped(agent_id)
        self._put_back(agent_id, safety)
        raise RestoreFailed(
            f"the agent did not come up healthy on the restored workspace ({status}); "
            f"the previous workspace is back (backup {safety.id})"
        )

    def _put_back(self, agent_id: str, safety: AgentBackup) -> None:
        self._remove_containers(agent_id)
        self.deps.runtime.import_volume(self._spec(agent_id), self.download(safety))

    # -- the agent ----------------------------------------------------------------------

    def _wants_running(self, agent_id: str) -> bool:
        with self.deps.sessions() as session:
            agent = session.get(Agent, agent_id)
            return agent is not None and agent.desired_state is DesiredState.RUNNING

    def _stopped(self, agent_id: str) -> None:
        """Stop the agent through the controller, and wait until it has."""
        self.ops.stop(agent_id, job=True)
        if self._settled(agent_id, {S.STOPPED, S.ERROR}) not in (S.STOPPED, S.ERROR):
            raise EngineError("the agent did not stop in time", code="stop_timeout")

    def _start(self, agent_id: str) -> None:
        try:
            self.ops.start(agent_id, job=True)
        except ClawHQError as exc:
            log.warning("agent %s: not started again after its backup job: %s", agent_id, exc)

    def _settled(self, agent_id: str, wanted: set[AgentStatus]) -> AgentStatus:
        settings = self.deps.settings
        deadline = time.monotonic() + max(settings.start_timeout, settings.stop_timeout)
        deadline += MARGIN_SECONDS
        while True:
            if self.ops.inline:
                self.ops.controller.run_pending()
            with self.deps.sessions() as session:
                agent = self._agent(session, agent_id)
                status = agent.status
            if status in wanted or time.monotonic() > deadline:
                return status
            time.sleep(POLL_SECONDS)

    def _remove_containers(self, agent_id: str) -> None:
        """The stopped agent's containers go, so that its volume can be replaced; its next
        start creates a new one (as after a long stop, when it gives its port back)."""
        runtime = self.deps.runtime
        for container in runtime.list_managed({labels.AGENT_ID: agent_id}):
            if container.is_running:
                raise EngineError("the agent's container still runs", code="agent_running")
            runtime.remove(container.id)

    def _spec(self, agent_id: str) -> ContainerSpec:
        with self.deps.sessions() as session:
            agent = self._agent(session, agent_id)
            specs = self.deps.specs
            image, disk = specs.image_of(agent, session), specs.disk_of(session, agent)
            return specs.spec_for(agent, None, image=image, disk=disk)

    # -- rows ---------------------------------------------------------------------------

    def _now(self) -> datetime:
        return self.deps.clock.now()

    def _row(self, backup_id: str) -> AgentBackup:
        with self.deps.sessions() as session:
            row = session.get(AgentBackup, backup_id)
            if row is None:
                raise LookupError(backup_id)
            session.expunge(row)
            return row

    @staticmethod
    def _lock(session: Session, backup_id: str) -> AgentBackup:
        row = session.get(AgentBackup, backup_id, with_for_update=True)
        if row is None:
            raise LookupError(backup_id)
        return row

    @staticmethod
    def _agent(session: Session, agent_id: str) -> Agent:
        agent = session.get(Agent, agent_id)
        if agent is None:
            raise EngineError(f"agent {agent_id} is gone", code="agent_not_found")
        return agent

    def _hold(self, backup_id: str, restart: bool) -> None:
        with self.deps.sessions.begin() as session:
            rows.holding_agent(self._lock(session, backup_id), restart)

    def _finish(
        self, backup_id: str, *, record: BackupRecord | None = None, error: str = ""
    ) -> None:
        with self.deps.sessions.begin() as session:
            row = self._lock(session, backup_id)
            if record is not None:
                rows.ready(row, record, self._now())
            else:
                rows.failed(row, error, self._now())


def _gz(tar: Iterator[bytes]) -> Iterator[bytes]:
    return gzip_stream(tar)


def _describe(exc: BaseException) -> str:
    """``code: message`` of a ClawHQ error (so the row says which, stably), else the type."""
    if isinstance(exc, ClawHQError):
        return (
            exc.message if exc.message.startswith(f"{exc.code}:") else f"{exc.code}: {exc.message}"
        )
    return f"{type(exc).__name__}: {exc}"
