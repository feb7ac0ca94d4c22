"""What this process learns about its host while it runs: the agent networks' addresses, the
agent firewall, the egress proxy. The only mutable state the controller's dependencies carry;
everything else they hold is fixed when ClawHQ is wired (:mod:`clawhq.context`).

Each field has one writer: :class:`~clawhq.controller.networks.AgentNetworks` the networks and
the firewall, ``clawhq serve``'s egress service the proxy (:meth:`HostState.report_egress_proxy`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from clawhq.status import LISTENING


class FirewallState(StrEnum):
    """The agent firewall as ``clawhq serve`` left it."""

    INSTALLED = "installed"
    OFF = "off"  # the operator said so (CLAWHQ_FIREWALL=off)
    NOT_INSTALLED = "not installed"  # installing failed
    UNKNOWN = "unknown"  # nobody tried: not ``serve``


class ProxyState(StrEnum):
    """The egress forward proxy as ``clawhq serve``'s lifespan left it."""

    LISTENING = LISTENING
    NOT_LISTENING = "not listening"
    UNKNOWN = "unknown"  # nobody tried to start it in this process


@dataclass
class HostState:
    #: Whether the agent networks are known to exist (:meth:`AgentNetworks.prepare`).
    prepared: bool = False
    #: The agent network's gateway: where ClawHQ's connections to agents come from.
    proxy_address: str = ""
    #: The egress network's gateway (agents whose plan restricts egress live there).
    egress_gateway: str = ""
    #: Where agents post webhooks (``CLAWHQ_WEBHOOK_BASE_URL``, else the agent network's
    #: gateway once it is known).
    webhook_base_url: str | None = None
    firewall: FirewallState = FirewallState.UNKNOWN
    egress_proxy: ProxyState = ProxyState.UNKNOWN
    #: Why the proxy does not listen ("" otherwise).
    egress_proxy_reason: str = ""
    #: The agents' listener (webhooks, LLM gateway: clawhq/api/agent_listener.py).
    agent_listener: ProxyState = ProxyState.UNKNOWN
    agent_listener_reason: str = ""

    @property
    def egress_proxy_text(self) -> str:
        """``listening``, ``not listening: <why>`` or ``unknown`` (``/health``'s words)."""
        if self.egress_proxy is ProxyState.NOT_LISTENING and self.egress_proxy_reason:
            return f"{self.egress_proxy.value}: {self.egress_proxy_reason}"
        return self.egress_proxy.value

    @property
    def agent_listener_text(self) -> str:
        """``listening``, ``not listening: <why>`` or ``unknown`` (``/health``'s words)."""
        if self.agent_listener is ProxyState.NOT_LISTENING and self.agent_listener_reason:
            return f"{self.agent_listener.value}: {self.agent_listener_reason}"
        return self.agent_listener.value

    def report_egress_proxy(self, text: str) -> None:
        """What the egress service says of its proxy, in ``egress_proxy_text``'s words."""
        state, _, reason = text.partition(": ")
        self.egress_proxy = ProxyState(state) if state in set(ProxyState) else ProxyState.UNKNOWN
        self.egress_proxy_reason = reason
