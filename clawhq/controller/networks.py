"""The agent networks and their firewall: made ready once the engine answers, and the rule
that, in production, no agent starts without the firewall."""

from __future__ import annotations

from collections.abc import Callable

from clawhq.controller.host import FirewallState, HostState
from clawhq.controller.spec import Placement
from clawhq.errors import Unavailable
from clawhq.runtime import Runtime
from clawhq.settings import Settings

#: Installs the agent firewall's rules through the engine it is given; True when they are in
#: place (``clawhq serve``'s).
FirewallInstaller = Callable[[Runtime], bool]


class AgentNetworks:
    def __init__(
        self,
        settings: Settings,
        runtime: Runtime,
        host: HostState,
        instance_id: str,
        firewall_installer: FirewallInstaller | None = None,
    ) -> None:
        """``firewall_installer`` (``clawhq serve``'s) puts the rules in when the networks are
        prepared; with ``CLAWHQ_FIREWALL=off`` the firewall is off on purpose instead."""
        self._settings = settings
        self._runtime = runtime
        self._host = host
        self._instance_id = instance_id
        self._install = firewall_installer
        host.webhook_base_url = settings.webhook_base_url
        if firewall_installer is not None and settings.firewall == "off":
            host.firewall = FirewallState.OFF

    def prepare(self) -> str:
        """Make sure the agent networks exist; return the agent network's gateway on the host,
        where agents reach ClawHQ (``CLAWHQ_AGENT_LISTENER_PORT``) unless
        ``CLAWHQ_WEBHOOK_BASE_URL`` says otherwise. The
        firewall's rules go in with them (now, or once the engine answers)."""
        host, settings = self._host, self._settings
        gateway = self._runtime.ensure_network(settings.agent_network)
        host.proxy_address = gateway
        host.egress_gateway = self._runtime.ensure_network(settings.egress_network)
        if host.webhook_base_url is None:
            host.webhook_base_url = f"http://{gateway}:{settings.agent_listener_port}"
        done = (FirewallState.INSTALLED, FirewallState.OFF)
        if self._install is not None and host.firewall not in done:
            installed = self._install(self._runtime)
            host.firewall = FirewallState.INSTALLED if installed else FirewallState.NOT_INSTALLED
        host.prepared = True
        return gateway

    def firewall_allows_agents(self) -> bool:
        """In production agents start only behind ClawHQ's firewall rules, unless the
        operator turned them off explicitly (``CLAWHQ_FIREWALL=off``): it fails closed."""
        if self._settings.env != "production" or self._settings.firewall == "off":
            return True
        return self._host.firewall is FirewallState.INSTALLED

    def require_firewall(self) -> None:
        if not self.firewall_allows_agents():
            raise Unavailable(
                f"the agent firewall is {self._host.firewall.value} and CLAWHQ_ENV=production "
                "starts no agent without it: run `clawhq serve` as root so it installs the "
                "rules (see `clawhq network status`), or set CLAWHQ_FIREWALL=off to run without "
                "them on purpose",
                code="firewall_not_ready",
            )

    @property
    def placement(self) -> Placement:
        """Where this ClawHQ puts agents: what their containers are told of it."""
        host = self._host
        return Placement(
            host.webhook_base_url or "", self._instance_id, host.proxy_address, host.egress_gateway
        )
