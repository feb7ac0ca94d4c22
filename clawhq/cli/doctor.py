"""``clawhq doctor``: is this machine ready to run ClawHQ? Each check says what to do."""

from __future__ import annotations

import os
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError

from clawhq.context import AppContext
from clawhq.db import migrate
from clawhq.errors import ClawHQError
from clawhq.settings import Settings


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def run_checks(context: AppContext) -> list[Check]:
    settings = context.settings
    checks: list[Check] = []

    if settings.encryption_key is not None:
        checks.append(Check("encryption key", True, "CLAWHQ_ENCRYPTION_KEY is set"))
    else:
        checks.append(
            Check(
                "encryption key",
                settings.env == "development",
                "CLAWHQ_ENCRYPTION_KEY is not set: a development key in the data dir is used; "
                "set one from `clawhq keys generate` for real use",
            )
        )

    try:
        current = migrate.is_up_to_date(context.engine)
        checks.append(
            Check(
                "database",
                current,
                "migrated to the latest revision"
                if current
                else "schema is behind: run `clawhq db upgrade`",
            )
        )
    except SQLAlchemyError as exc:
        checks.append(
            Check("database", False, f"cannot connect ({type(exc).__name__}): check DATABASE_URL")
        )

    try:
        context.runtime.ping()
        checks.append(Check("docker engine", True, "reachable"))
        image = settings.agent_image
        present = context.runtime.image_exists(image)
        checks.append(
            Check(
                "agent image",
                present,
                f"{image} is present"
                if present
                else f"{image} is missing: run `clawhq image build` (or set CLAWHQ_AGENT_IMAGE)",
            )
        )
    except ClawHQError as exc:
        checks.append(
            Check(
                "docker engine",
                False,
                f"{exc.message}: start dockerd (apt-get install -y docker.io) or set DOCKER_HOST",
            )
        )

    if settings.env == "production":
        checks.append(_firewall_policy(settings))

    pool = context.parts.ports
    try:
        with context.sessions() as session:
            leased = pool.in_use(session)
        free = sum(1 for port in range(pool.low, pool.high + 1) if pool.is_free(pool.host_ip, port))
        usable = free > 0
        checks.append(
            Check(
                "port range",
                usable,
                f"{pool.low}-{pool.high}: {leased} leased, {free} bindable on {pool.host_ip}"
                if usable
                else f"no port in {pool.low}-{pool.high} is free on {pool.host_ip}: "
                "change CLAWHQ_PORT_RANGE",
            )
        )
    except SQLAlchemyError:
        checks.append(Check("port range", False, "needs the database"))
    return checks


def _firewall_policy(settings: Settings) -> Check:
    """Production fails closed: no agent starts until ``clawhq serve`` installed the rules."""
    if settings.firewall == "off":
        return Check(
            "agent firewall",
            True,
            "CLAWHQ_FIREWALL=off: agents start without ClawHQ's rules (your own must keep them "
            "from the host and private networks; `clawhq network status` checks them)",
        )
    if os.geteuid() != 0:
        return Check(
            "agent firewall",
            False,
            "CLAWHQ_ENV=production starts agents only behind ClawHQ's firewall rules, which "
            "`clawhq serve` installs when it runs as root; it does not here, so no agent would "
            "start (or set CLAWHQ_FIREWALL=off to run without them on purpose)",
        )
    return Check(
        "agent firewall",
        True,
        "CLAWHQ_ENV=production: `clawhq serve` (root) installs the rules before any agent "
        "starts, and starts none without them; `clawhq doctor --security` verifies them",
    )
