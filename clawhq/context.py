"""The composition root: settings, database, keyring, runtime and orchestrator, built once."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from clawhq.crypto import Keyring, load_keyring
from clawhq.db.engine import create_db_engine, make_session_factory
from clawhq.orchestrator.health import Probe, http_probe
from clawhq.orchestrator.lifecycle import AgentOrchestrator
from clawhq.orchestrator.supervisor import Supervisor
from clawhq.runtime import Runtime
from clawhq.settings import Settings


@dataclass
class AppContext:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    keyring: Keyring
    runtime: Runtime
    orchestrator: AgentOrchestrator
    supervisor: Supervisor | None

    def close(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()
        self.orchestrator.shutdown()
        close = getattr(self.runtime, "close", None)
        if callable(close):
            close()
        self.engine.dispose()


def docker_runtime(settings: Settings) -> Runtime:
    from clawhq.runtime.docker_engine import DockerRuntime

    return DockerRuntime(settings.docker_host)


def build_context(
    settings: Settings, *, runtime: Runtime | None = None, probe: Probe = http_probe
) -> AppContext:
    """Wire everything from ``settings``; tests pass their own runtime or probe."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_db_engine(settings.resolved_database_url)
    sessions = make_session_factory(engine)
    keyring = load_keyring(settings)
    runtime = runtime if runtime is not None else docker_runtime(settings)
    orchestrator = AgentOrchestrator(settings, runtime, sessions, keyring, probe=probe)
    supervisor = Supervisor(orchestrator) if settings.supervise else None
    return AppContext(settings, engine, sessions, keyring, runtime, orchestrator, supervisor)
