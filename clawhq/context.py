"""The composition root: settings, database, keyring, runtime and controller, built once."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from clawhq.controller import desired
from clawhq.controller.clock import Clock, SystemClock
from clawhq.controller.controller import Controller
from clawhq.controller.health import Probe, http_probe
from clawhq.controller.operations import Operations
from clawhq.controller.parts import Parts
from clawhq.controller.rollouts import RolloutDriver
from clawhq.controller.sources import Sources
from clawhq.controller.views import AgentViews
from clawhq.crypto import Keyring, load_keyring
from clawhq.db import installation
from clawhq.db.engine import create_db_engine, make_session_factory
from clawhq.db.loop_reads import LoopReads, make_loop_reads
from clawhq.errors import DatabaseUnavailable
from clawhq.observability.metrics import Metrics, StateCollector
from clawhq.runtime import Runtime
from clawhq.runtime.metered import MeteredRuntime
from clawhq.services import agents
from clawhq.services.usage import UsageSampler
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
    parts: Parts
    controller: Controller
    operations: Operations
    views: AgentViews
    sources: Sources
    usage: UsageSampler | None
    metrics: Metrics
    threads: bool = True

    def start_background(self) -> None:
        """Start the controller, its sources and usage sampling (the API's lifespan)."""
        if self.threads:
            self.controller.start()
            self.sources.start()
        else:
            self.sources.resync()
        if self.usage is not None:
            self.usage.start()

    def close(self) -> None:
        self.sources.stop()
        self.controller.stop()
        if self.usage is not None:
            self.usage.stop()
        self.runtime.close()
        self.engine.dispose()

    async def aclose(self) -> None:
        """``close``, then the loop's own database connections (on that loop)."""
        self.close()
        await self.loop_reads.aclose()


def docker_runtime(settings: Settings, instance_id: str | None) -> Runtime:
    from clawhq.runtime.docker_engine import DockerRuntime

    return DockerRuntime(settings.docker_host, instance_id=instance_id, disk_dir=settings.disk_dir)


def build_context(
    settings: Settings,
    *,
    runtime: Runtime | None = None,
    probe: Probe = http_probe,
    clock: Clock | None = None,
    threads: bool = True,
    instance_required: bool = True,
) -> AppContext:
    """Wire everything from ``settings``; tests pass their own runtime, probe or clock.

    Without ``threads`` nothing runs in the background: operations run the controller on
    the caller's thread (deterministic tests). The installation's id comes from the database:
    without it (``instance_required=False``, for ``clawhq doctor``) the runtime is unscoped."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_db_engine(settings.resolved_database_url)
    sessions = make_session_factory(engine)
    read_sessions = make_session_factory(engine, read_only=True)
    loop_reads = make_loop_reads(settings.resolved_database_url, engine)
    keyring = load_keyring(settings)
    metrics = Metrics()
    try:
        instance_id: str | None = installation.instance_id(sessions)
    except SQLAlchemyError as exc:
        if instance_required:
            engine.dispose()
            raise DatabaseUnavailable(
                f"cannot read this installation's id from the database ({type(exc).__name__}): "
                "check DATABASE_URL and run `clawhq db upgrade`"
            ) from exc
        instance_id = None
    inner = runtime if runtime is not None else docker_runtime(settings, instance_id)
    metered = MeteredRuntime(inner, metrics)
    parts = Parts(
        settings=settings,
        sessions=sessions,
        read_sessions=read_sessions,
        runtime=metered,
        keyring=keyring,
        clock=clock or SystemClock(),
        metrics=metrics,
        instance_id=instance_id or "",
        webhook_base_url=settings.webhook_base_url,
        supervise=settings.supervise,
    )
    controller = Controller(parts, probe)
    controller.rollout_sync = RolloutDriver(
        sessions,
        request_recreate=desired.request_recreate,
        enqueue_agent=controller.enqueue,
        intended_config=parts.intended_summary,
        now=parts.clock.now,
    ).sync
    operations = Operations(parts, controller, inline=not threads)
    sources = Sources(controller, supervise=settings.supervise)
    usage = UsageSampler(metered, settings.stats_interval) if settings.stats_interval else None

    def agents_by_status() -> dict[str, int]:
        try:
            with read_sessions() as session:
                return agents.count_by_status(session)
        except SQLAlchemyError:
            return {}

    def ports() -> tuple[int, int]:
        try:
            with read_sessions() as session:
                in_use = parts.ports.in_use(session)
        except SQLAlchemyError:
            return (0, 0)
        return in_use, settings.port_count - in_use

    metrics.add_collector(
        StateCollector(
            agents_by_status,
            ports,
            usage.by_user if usage else list,
            usage.disks if usage else list,
            engine_up=lambda: parts.observed.fresh,
        )
    )
    return AppContext(
        settings,
        engine,
        sessions,
        read_sessions,
        loop_reads,
        keyring,
        metered,
        parts,
        controller,
        operations,
        AgentViews(parts),
        sources,
        usage,
        metrics,
        threads,
    )
