"""Whether this host can give agents what their plans ask for: capped workspace disks
(docs/disks.md) and, for ``allowlist`` plans, the egress forward proxy (docs/egress.md).

``GET /health`` and ``clawhq doctor`` both read it from here. In production each fails closed
the way deploys do: a cap that cannot be made, or an ``allowlist`` plan without a listening
proxy, means agents cannot run as their plans say, so ClawHQ is not healthy.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from clawhq.db.models import Plan
from clawhq.runtime import Runtime
from clawhq.settings import Settings
from clawhq.status import LISTENING

#: Nobody tried to start it in this process (not ``clawhq serve``'s lifespan).
UNKNOWN = "unknown"


@dataclass(frozen=True)
class PlanNeeds:
    """What the plans in the database ask of the host."""

    #: Some plan sets its own workspace size.
    disk_cap: bool
    #: Some plan's egress policy is ``allowlist`` (its agents reach out through the proxy).
    allowlist: bool


def plan_needs(sessions: sessionmaker[Session]) -> PlanNeeds | None:
    """What the plans need, or ``None`` when the database cannot be asked."""
    try:
        with sessions() as session:
            sized = select(Plan.name).where(Plan.agent_disk.is_not(None)).limit(1)
            allowlist = select(Plan.name).where(Plan.egress_policy == "allowlist").limit(1)
            return PlanNeeds(
                disk_cap=session.scalar(sized) is not None,
                allowlist=session.scalar(allowlist) is not None,
            )
    except SQLAlchemyError:
        return None


@dataclass(frozen=True)
class Readiness:
    #: ``ok`` (capped disks can be made), ``off`` (no cap is configured: neither
    #: ``CLAWHQ_AGENT_DISK`` nor any plan) or ``unavailable: <why>``.
    disks: str
    #: ``listening``, ``not listening: <why>`` or ``unknown`` (nobody started it here).
    egress_proxy: str
    #: False when, in production, agents cannot start for want of their workspace cap.
    disks_allow_agents: bool
    #: False when, in production, ``allowlist`` agents would reach nothing for want of the
    #: proxy.
    egress_allows_agents: bool

    @property
    def ok(self) -> bool:
        return self.disks_allow_agents and self.egress_allows_agents


def disk_caps(settings: Settings, runtime: Runtime, needs: PlanNeeds | None) -> str:
    """``ok``, ``off`` or ``unavailable: <why>`` (plans unknown: ``CLAWHQ_AGENT_DISK`` alone)."""
    configured = settings.agent_disk is not None or (needs is not None and needs.disk_cap)
    if not configured:
        return "off"
    problem = runtime.disk_support()
    return "ok" if problem is None else f"unavailable: {problem}"


def assess(
    settings: Settings, runtime: Runtime, egress_proxy: str, needs: PlanNeeds | None
) -> Readiness:
    """The disks and the proxy, and whether either keeps agents from running as their plans
    say. Outside production nothing here makes ClawHQ unhealthy: deploys fall back to plain
    volumes there (with a warning) and the states are only reported. A proxy in any state but
    ``listening`` (``unknown`` included: nobody started it) counts as not listening."""
    disks = disk_caps(settings, runtime, needs)
    production = settings.env == "production"
    allowlist = needs is not None and needs.allowlist
    return Readiness(
        disks=disks,
        egress_proxy=egress_proxy,
        disks_allow_agents=not (production and disks.startswith("unavailable")),
        egress_allows_agents=not (production and allowlist and egress_proxy != LISTENING),
    )
