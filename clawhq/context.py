"""ClawHQ's core, wired once: settings, database, key ring, engine, the controller and what
feeds it. :func:`build_context` is the only place these objects are made and connected; the
API adds its own on top of it in one place too (:func:`clawhq.api.services.build_services`).

Everything here is fixed once built, but :class:`~clawhq.controller.host.HostState`, what
the process learns about its host while it runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from clawhq.backups import store_from_settings
from clawhq.controller import desired
from clawhq.controller.backup_schedule import BackupSchedule
from clawhq.controller.backups import Backups
from clawhq.controller.clock import Clock, SystemClock
from clawhq.controller.controller import Controller
from clawhq.controller.deps import ControllerDeps, rules_of, timing_of
from clawhq.controller.gateways import Gateways
from clawhq.controller.health import Probe, http_probe
from clawhq.controller.host import HostState
from clawhq.controller.keys import AgentKey, Key
from clawhq.controller.networks import AgentNetworks, FirewallInstaller
from clawhq.controller.observed import ObservedState
from clawhq.controller.operations import Operations
from clawhq.controller.ports import PortPool
from clawhq.controller.probes import Prober
from clawhq.controller.queue import WorkQueue
from clawhq.controller.rollouts import RolloutDriver
from clawhq.controller.sources import Sources
from clawhq.controller.specs import AgentSpecs
from clawhq.controller.sync import AgentSync
from clawhq.controller.views import AgentViews
from clawhq.crypto import Keyring, load_keyring
from clawhq.db import installation
from clawhq.db.engine import create_db_engine, make_session_factory
from clawhq.db.loop_reads import LoopReads, make_loop_reads
from clawhq.errors import ClawHQError, DatabaseUnavailable
from clawhq.observability.metrics import Metrics, StateCollector
from clawhq.runtime import Runtime
from clawhq.runtime.metered import MeteredRuntime
from clawhq.services import agents
from clawhq.services.usage import UsageSampler
from clawhq.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AppContext:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    read_sessions: sessionmaker[Session]
    loop_reads: LoopReads
    keyring: Keyring
    runtime: Runtime
    deps: ControllerDeps
    gateways: Gateways
    controller: Controller
    operations: Operations
    views: AgentViews
    sources: Sources
    usage: UsageSampler | None
    metrics: Metrics
    backups: Backups
    schedule: BackupSchedule
    threads: bool = True

    @property
    def host(self) -> HostState:
        return self.deps.host

    @property
    def networks(self) -> AgentNetworks:
        return self.deps.networks

    @property
    def instance_id(self) -> str:
        return self.deps.instance_id

    def start_background(self) -> None:
        """Start the controller, its sources, usage sampling and scheduled backups (the
        API's lifespan); recover the backup jobs an earlier run left."""
        if self.threads:
            self.controller.start()
            self.sources.start()
        else:
            self.sources.resync()
        if self.usage is not None:
            self.usage.start()
        try:
            self.backups.recover()
        except ClawHQError as exc:
            log.error("backups left by an earlier run not recovered yet: %s", exc)
        if self.threads and self.deps.supervise:
            self.schedule.start()  # scheduled backups: the supervising process's

    def close(self) -> None:
        self.schedule.stop()
        self.backups.close()
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
    firewall_installer: FirewallInstaller | None = None,
) -> AppContext:
    """Wire everything from ``settings``; tests pass their own runtime, probe or clock.

    Without ``threads`` nothing runs in the background: operations run the controller on
    the caller's thread (deterministic tests). The installation's id comes from the database:
    without it (``instance_required=False``, for ``clawhq doctor``) the runtime is unscoped.
    ``firewall_installer`` (``clawhq serve``'s) puts the agent firewall's rules in as soon as
    the engine answers."""
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
    clock = clock or SystemClock()
    deps = controller_deps(
        settings,
        sessions,
        read_sessions,
        metered,
        keyring,
        clock,
        metrics,
        instance_id or "",
        firewall_installer,
    )
    gateways = Gateways(
        deps.observed, deps.host, settings.agent_internal_port, settings.agent_health_path
    )
    controller = wire_controller(deps, probe, gateways)
    usage = UsageSampler(metered, settings.stats_interval) if settings.stats_interval else None
    metrics.add_collector(state_collector(deps, usage))
    operations = Operations(deps, controller, inline=not threads)
    backups = Backups(deps, operations, store_from_settings(settings), threads=threads)
    return AppContext(
        settings,
        engine,
        sessions,
        read_sessions,
        loop_reads,
        keyring,
        metered,
        deps,
        gateways,
        controller,
        operations,
        AgentViews(settings, metered, deps.observed, deps.specs),
        Sources(controller, deps),
        usage,
        metrics,
        backups,
        BackupSchedule(backups, settings.backup_check_interval),
        threads,
    )


def controller_deps(
    settings: Settings,
    sessions: sessionmaker[Session],
    read_sessions: sessionmaker[Session],
    runtime: Runtime,
    keyring: Keyring,
    clock: Clock,
    metrics: Metrics,
    instance_id: str,
    firewall_installer: FirewallInstaller | None = None,
) -> ControllerDeps:
    """What the controller's pieces share, fixed from here on (but the host's state)."""
    observed = ObservedState(clock.monotonic)
    host = HostState()
    networks = AgentNetworks(settings, runtime, host, instance_id, firewall_installer)
    return ControllerDeps(
        settings=settings,
        sessions=sessions,
        read_sessions=read_sessions,
        runtime=runtime,
        keyring=keyring,
        clock=clock,
        metrics=metrics,
        instance_id=instance_id,
        observed=observed,
        host=host,
        networks=networks,
        specs=AgentSpecs(settings, runtime, observed, lambda: networks.placement),
        ports=PortPool(settings.port_range, str(settings.agent_bind_ip)),
        rules=rules_of(settings),
        timing=timing_of(settings),
    )


def wire_controller(deps: ControllerDeps, probe: Probe, gateways: Gateways) -> Controller:
    """One work queue, fed by the prober and the rollouts, worked by the controller."""
    queue: WorkQueue[Key] = WorkQueue(deps.clock)

    def enqueue(agent_id: str, delay: float = 0.0) -> None:
        queue.add(AgentKey(agent_id), delay)

    prober = Prober(deps.settings, probe, deps.clock, enqueue, gateways.health_url, deps.metrics)
    rollouts = RolloutDriver(
        deps.sessions,
        request_recreate=desired.request_recreate,
        enqueue_agent=enqueue,
        intended_config=deps.specs.intended_summary,
        now=deps.clock.now,
    )
    return Controller(queue, prober, AgentSync(deps, prober), rollouts.sync)


def state_collector(deps: ControllerDeps, usage: UsageSampler | None) -> StateCollector:
    """The gauges read at each scrape: agents by status, the port pool, per-user use."""
    read_sessions, settings = deps.read_sessions, deps.settings

    def agents_by_status() -> dict[str, int]:
        try:
            with read_sessions() as session:
                return agents.count_by_status(session)
        except SQLAlchemyError:
            return {}

    def ports() -> tuple[int, int]:
        try:
            with read_sessions() as session:
                in_use = deps.ports.in_use(session)
        except SQLAlchemyError:
            return (0, 0)
        return in_use, settings.port_count - in_use

    return StateCollector(
        agents_by_status,
        ports,
        usage.by_user if usage else list,
        usage.disks if usage else list,
        engine_up=lambda: deps.observed.fresh,
    )
