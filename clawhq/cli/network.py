"""``clawhq network``: the host firewall rules around the agent network (see docs/network.md)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import typer

from clawhq.cli.exits import fail, settings_or_exit
from clawhq.errors import ClawHQError, FirewallError
from clawhq.network.firewall import FirewallPlan, inputs_for, plan_rules
from clawhq.network.host import read_host_facts
from clawhq.network.iptables import Iptables
from clawhq.runtime import Runtime
from clawhq.runtime.security import SecurityInspector
from clawhq.settings import Settings

app = typer.Typer(
    help="Host firewall rules that keep agents from the host and private networks.",
    no_args_is_help=True,
)
log = logging.getLogger("clawhq.network")


def current_plans(settings: Settings, inspector: SecurityInspector) -> list[FirewallPlan]:
    """The rules for both agent networks as they are now (the open one, then the egress
    network); the networks must exist."""
    host = read_host_facts()
    plans = []
    for name, restricted in ((settings.agent_network, False), (settings.egress_network, True)):
        network = inspector.network_facts(name)
        if network is None:
            raise FirewallError(
                f"network {name} does not exist yet "
                "(`clawhq serve` or `clawhq network setup` creates it)"
            )
        if network.driver != "bridge" or not network.bridge:
            raise FirewallError(f"network {network.name} is not a bridge ({network.driver})")
        inputs = inputs_for(
            settings, network, host.dns_servers, host.networks, restricted=restricted
        )
        plans.append(plan_rules(inputs))
    return plans


def apply_all(plans: list[FirewallPlan]) -> None:
    iptables = Iptables()
    for plan in plans:
        iptables.apply(plan)


def verify_all(plans: list[FirewallPlan]) -> list[str]:
    iptables = Iptables()
    return [problem for plan in plans for problem in iptables.verify(plan)]


def inspector_of(runtime: Runtime) -> SecurityInspector:
    if not isinstance(runtime, SecurityInspector):
        raise FirewallError("this container engine cannot report its networks")
    return runtime


def install_at_start(settings: Settings, runtime: Runtime) -> bool:
    """What ``clawhq serve`` does: install the rules when it can, and say clearly when not."""
    name = settings.agent_network
    if settings.firewall == "off":
        log.warning(
            "firewall: CLAWHQ_FIREWALL=off, so ClawHQ leaves the host firewall alone; agents on "
            "%s are kept from the host and private networks only by rules you install "
            "(`clawhq network status` checks them)",
            name,
        )
        return False
    if os.geteuid() != 0:
        log.warning(
            "firewall: not running as root, so agents on %s can reach the host's services, the "
            "cloud metadata address and private networks; run `sudo clawhq network setup`",
            name,
        )
        return False
    try:
        plans = current_plans(settings, inspector_of(runtime))
        apply_all(plans)
    except ClawHQError as exc:
        log.error(
            "firewall: could not install rules for %s: %s; agents can reach the host's services",
            name,
            exc.message,
        )
        return False
    inputs = plans[0].inputs
    log.info(
        "firewall: agents on %s (%s) reach the host only on port %d; metadata and %d private "
        "range(s) rejected; agents on %s reach ClawHQ alone",
        name,
        inputs.bridge,
        inputs.webhook_port,
        len(inputs.denied) - 1,
        settings.egress_network,
    )
    return True


@dataclass
class Engine:
    """Settings and a Docker runtime, for the commands that need no database."""

    settings: Settings
    runtime: Runtime

    def close(self) -> None:
        close = getattr(self.runtime, "close", None)
        if callable(close):
            close()


def engine_for(settings: Settings) -> Engine:
    from clawhq.context import docker_runtime

    try:
        return Engine(settings, docker_runtime(settings, None))  # networks: no agent listing
    except ClawHQError as exc:
        raise fail(exc) from None


@app.command()
def setup() -> None:
    """Install (or replace) the rules for CLAWHQ_AGENT_NETWORK and CLAWHQ_EGRESS_NETWORK;
    creates the networks if missing."""
    engine = engine_for(settings_or_exit())
    try:
        engine.runtime.ensure_network(engine.settings.agent_network)
        engine.runtime.ensure_network(engine.settings.egress_network)
        plans = current_plans(engine.settings, inspector_of(engine.runtime))
        apply_all(plans)
    except ClawHQError as exc:
        raise fail(exc) from None
    finally:
        engine.close()
    for plan in plans:
        typer.echo(f"installed firewall rules for network {plan.inputs.network}:")
        for line in plan.describe():
            typer.echo(f"  {line}")


@app.command()
def teardown() -> None:
    """Remove the rules of both agent networks (agents can then reach the host again)."""
    settings = settings_or_exit()
    for name in (settings.agent_network, settings.egress_network):
        try:
            removed = Iptables().remove(name)
        except ClawHQError as exc:
            raise fail(exc) from None
        if removed:
            typer.echo(f"removed {len(removed)} rule(s) and chain(s) for {name}")
        else:
            typer.echo(f"no ClawHQ firewall rules for {name}")


@app.command()
def status() -> None:
    """Check that the rules are in place and current; exit 1 when they are not."""
    engine = engine_for(settings_or_exit())
    try:
        plans = current_plans(engine.settings, inspector_of(engine.runtime))
        problems = verify_all(plans)
    except ClawHQError as exc:
        raise fail(exc) from None
    finally:
        engine.close()
    for plan in plans:
        for line in plan.describe():
            typer.echo(line)
    if problems:
        for problem in problems:
            typer.echo(f"[FAIL] {problem}")
        typer.echo("run `clawhq network setup` to install the rules")
        raise typer.Exit(1)
    names = " and ".join(plan.inputs.network for plan in plans)
    typer.echo(f"[ok  ] firewall rules for {names} are in place")
