"""``clawhq doctor``: is this machine ready to run ClawHQ? Each check says what to do."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError

from clawhq.context import AppContext
from clawhq.controller import readiness
from clawhq.controller.readiness import PlanNeeds
from clawhq.db import migrate
from clawhq.errors import ClawHQError
from clawhq.runtime.security import SecurityInspector
from clawhq.settings import Settings, unknown_settings

#: Seconds the egress proxy probe waits to connect and for an answer.
PROBE_SECONDS = 2.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def settings_check(settings: Settings, environ: dict[str, str] | None = None) -> Check:
    """Every ``CLAWHQ_*`` variable is one ClawHQ reads; in production an unknown one fails."""
    unknown = unknown_settings(environ)
    if not unknown:
        return Check("settings", True, "every CLAWHQ_* variable is a known setting")
    production = settings.env == "production"
    tail = (
        "; CLAWHQ_ENV=production refuses to start with them"
        if production
        else "; ignored (a warning: production refuses to start with them)"
    )
    return Check("settings", not production, "; ".join(unknown) + tail)


def agent_origin_check(settings: Settings) -> Check:
    """Agents' pages need origins the users' browsers reach: ``*.localhost`` is this machine."""
    template = settings.agent_origin_template
    if settings.agent_origin is not None:
        return Check("agent origin", True, f"agents' pages are served on {template}")
    return Check(
        "agent origin",
        settings.env == "development",
        f"CLAWHQ_AGENT_ORIGIN is not set: agents' pages are on {template}, which only a browser "
        "on this machine resolves; set it to https://{agent}.<a domain of yours> with a wildcard "
        "DNS name and certificate (docs/agent-access.md)",
    )


def run_checks(context: AppContext) -> list[Check]:
    settings = context.settings
    checks: list[Check] = [settings_check(settings), agent_origin_check(settings)]

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
    needs = readiness.plan_needs(context.sessions)
    checks.append(_disk_caps(context, needs))
    checks.append(_egress_proxy(context, needs))

    pool = context.deps.ports
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


def _disk_caps(context: AppContext, needs: PlanNeeds | None) -> Check:
    """Whether this host can make the capped workspace disks the settings and plans ask for."""
    settings = context.settings
    state = readiness.disk_caps(settings, context.runtime, needs)
    unread = " (the plans were not read: the database is unavailable)" if needs is None else ""
    if state == "off":
        return Check(
            "workspace disk caps",
            True,
            f"off: CLAWHQ_AGENT_DISK=off and no plan sets a size{unread}, so workspaces are plain "
            "volumes sharing the host's disk (docs/disks.md)",
        )
    if state == "ok":
        return Check(
            "workspace disk caps",
            True,
            f"capped workspace disks can be made under {settings.disk_dir} (docs/disks.md)",
        )
    # What this process can do: the doctor must run as the user `clawhq serve` runs as.
    problem = f"{state.removeprefix('unavailable: ')}, as this doctor's process sees it"
    ready = readiness.assess(settings, context.runtime, readiness.UNKNOWN, needs)
    remedy = (
        "run `clawhq serve` (and this doctor) as root on the engine's own host, with "
        "/dev/loop-control and e2fsprogs (docs/disks.md), or set CLAWHQ_AGENT_DISK=off and no "
        "plan size to run without caps on purpose"
    )
    if ready.disks_allow_agents:
        return Check(
            "workspace disk caps",
            True,
            f"unavailable ({problem}){unread}: new workspaces will be plain volumes, uncapped "
            f"(with CLAWHQ_ENV=production no agent would start); to cap them, {remedy}",
        )
    return Check(
        "workspace disk caps",
        False,
        f"unavailable ({problem}){unread}: CLAWHQ_ENV=production deploys and starts no agent "
        f"without its cap (503 disk_quota_unavailable); {remedy}",
    )


def _egress_proxy(context: AppContext, needs: PlanNeeds | None) -> Check:
    """Whether ``clawhq serve``'s forward proxy answers on the egress network's gateway.

    The doctor is not ``serve``: it can only knock on the configured port. ClawHQ's proxy
    answers 407 with ``X-ClawHQ-Error`` to a request without an agent's token (``serve`` logs
    it as a refused connection); anything else there keeps ``serve`` from listening.
    """
    settings = context.settings
    port = settings.egress_proxy_port
    if needs is None:
        return Check("egress proxy", False, "needs the database (which plans use the allowlist)")
    if not needs.allowlist:
        return Check(
            "egress proxy",
            True,
            "not checked: no plan uses the allowlist policy, so no agent needs it (`clawhq "
            f"serve` still starts it on port {port} of the egress network's gateway; "
            "docs/egress.md)",
        )
    gateway, why = _egress_gateway(context)
    if gateway is None:
        return Check(
            "egress proxy",
            True,
            f"not checked: {why}; `clawhq serve` creates the network and starts the proxy on "
            f"its gateway's port {port} (then GET /health says egressProxy; docs/egress.md)",
        )
    where = f"{gateway}:{port}"
    answer, detail = _knock(gateway, port)
    if answer == "clawhq":
        return Check("egress proxy", True, f"listening on {where}: ClawHQ's proxy answers")
    state = f"not listening: {detail}"
    ready = readiness.assess(settings, context.runtime, state, needs)
    if answer == "other":
        return Check(
            "egress proxy",
            ready.egress_allows_agents,
            f"something that is not ClawHQ's proxy answers on {where} ({detail}): `clawhq "
            "serve` cannot listen there, so agents of allowlist plans would reach nothing; "
            "free the port or set CLAWHQ_EGRESS_PROXY_PORT (docs/egress.md)",
        )
    api = _api_address(settings)
    if not _answers(*api):
        return Check(
            "egress proxy",
            True,
            f"not listening ({detail} on {where}), and ClawHQ's API does not answer on "
            f"{api[0]}:{api[1]} either: `clawhq serve` is not running; it starts the proxy "
            "there (then GET /health says egressProxy; docs/egress.md)",
        )
    return Check(
        "egress proxy",
        ready.egress_allows_agents,
        f"not listening ({detail} on {where}) while ClawHQ's API answers on {api[0]}:{api[1]}: "
        "its proxy did not start (its log says why: 'egress proxy cannot listen on …'), so "
        "agents of allowlist plans reach nothing; free the port and restart `clawhq serve` "
        "(docs/egress.md)",
    )


def _egress_gateway(context: AppContext) -> tuple[str | None, str]:
    """The egress network's gateway, or ``None`` and why it is not known (never creates it)."""
    runtime, name = context.runtime, context.settings.egress_network
    if not isinstance(runtime, SecurityInspector):
        return None, "this container engine cannot report its networks"
    try:
        network = runtime.network_facts(name)
    except ClawHQError as exc:
        return None, f"the engine cannot be asked for network {name} ({exc.message})"
    if network is None:
        return None, f"network {name} does not exist yet"
    if not network.gateways:
        return None, f"network {name} has no gateway"
    return network.gateways[0], ""


def _knock(host: str, port: int) -> tuple[str, str]:
    """``clawhq`` (ClawHQ's proxy answered), ``other`` (something else did) or ``closed``
    (nothing to talk to), with what was seen. The request names no token and a destination
    that cannot exist."""
    target = b"clawhq-doctor.invalid:443"
    request = b"CONNECT " + target + b" HTTP/1.1\r\nHost: " + target + b"\r\n\r\n"
    try:
        sock = socket.create_connection((host, port), timeout=PROBE_SECONDS)
    except OSError as exc:
        return "closed", _why(exc)
    reply = b""
    deadline = time.monotonic() + PROBE_SECONDS  # one deadline for the whole answer
    with sock:
        try:
            sock.sendall(request)
            while b"\r\n\r\n" not in reply and len(reply) < 16 * 1024:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("timed out")
                sock.settimeout(left)
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
        except OSError as exc:
            if not reply:
                return "other", f"no answer: {_why(exc)}"
    head = reply.partition(b"\r\n\r\n")[0].decode("latin-1")
    lines = [line.lower() for line in head.split("\r\n")]
    if lines[0].startswith("http/1.1 407") and any(
        line.startswith("x-clawhq-error: egress_") for line in lines[1:]
    ):
        return "clawhq", ""
    return "other", repr(head.split("\r\n")[0][:80]) if head else "it sent nothing back"


def _why(exc: OSError) -> str:
    return (exc.strerror or str(exc) or type(exc).__name__).lower()


def _api_address(settings: Settings) -> tuple[str, int]:
    """Where this doctor reaches ``clawhq serve``'s API (a wildcard: over loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(settings.host, settings.host)
    return host, settings.port


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=PROBE_SECONDS):
            return True
    except OSError:
        return False
