"""The composition root: settings, database, keyring, runtime and orchestrator, built once."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from clawhq.crypto import Keyring, load_keyring
from clawhq.db.engine import create_db_engine, make_session_factory
from clawhq.db.loop_reads import LoopReads, make_loop_reads
from clawhq.observability.metrics import Metrics, StateCollector
from clawhq.orchestrator.health import Probe, http_probe
from clawhq.orchestrator.lifecycle import AgentOrchestrator
from clawhq.orchestrator.supervisor import Supervisor
from clawhq.orchestrator.usage import UsageSampler
from clawhq.runtime import Runtime
from clawhq.runtime.metered import MeteredRuntime
from clawhq.services import agents
from clawhq.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class AppContext:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    read_sessions: sessionmaker[Session]
    loop_reads: LoopReads
    keyring: Keyring
    runtime: Runtime
    orchestrator: AgentOrchestrator
    supervisor: Supervisor | None
    usage: UsageSampler | None
    metrics: Metrics

    def start_background(self) -> None:
        """Start supervision and usage sampling (the API's lifespan does this)."""
        try:
            self.orchestrator.claim()  # scope the engine before anything lists containers
        except SQLAlchemyError as exc:
            log.error("database unavailable at start (%s); supervision will retry", exc)
        if self.supervisor is not None:
            self.supervisor.start()
        if self.usage is not None:
            self.usage.start()

    def close(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()
        if self.usage is not None:
            self.usage.stop()
        self.orchestrator.shutdown()
        close = getattr(self.runtime, "close", None)
        if callable(close):
            close()
        self.engine.dispose()

    async def aclose(self) -> None:
        """``close``, then the loop's own database connections (on that loop)."""
        self.close()
        await self.loop_reads.aclose()


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
    read_sessions = make_session_factory(engine, read_only=True)
    loop_reads = make_loop_reads(settings.resolved_database_url, engine)
    keyring = load_keyring(settings)
    metrics = Metrics()
    metered = MeteredRuntime(runtime if runtime is not None else docker_runtime(settings), metrics)
    orchestrator = AgentOrchestrator(
        settings, metered, sessions, keyring, probe=probe, metrics=metrics
    )
    supervisor = Supervisor(orchestrator) if settings.supervise else None
    usage = UsageSampler(metered, settings.stats_interval) if settings.stats_interval else None

    def agents_by_status() -> dict[str, int]:
        try:
            with sessions() as session:
                return agents.count_by_status(session)
        except SQLAlchemyError:
            return {}

    def ports() -> tuple[int, int]:
        try:
            with sessions() as session:
                in_use = orchestrator.ports.in_use(session)
        except SQLAlchemyError:
            return (0, 0)
        return in_use, settings.port_count - in_use

    metrics.add_collector(StateCollector(agents_by_status, ports, usage.by_user if usage else list))
    return AppContext(
        settings,
        engine,
        sessions,
        read_sessions,
        loop_reads,
        keyring,
        metered,
        orchestrator,
        supervisor,
        usage,
        metrics,
    )
