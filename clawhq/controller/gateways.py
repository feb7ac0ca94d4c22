"""Where each agent's gateway answers: its container's address on the agent network."""

from __future__ import annotations

from clawhq.controller.host import HostState
from clawhq.controller.observed import ObservedState


class Gateways:
    """What the agent proxy and the prober need to know of agents: where to reach them."""

    def __init__(self, observed: ObservedState, host: HostState, port: int, health_path: str):
        self._observed = observed
        self._host = host
        self._port = port
        self._health_path = health_path

    def gateway_url(self, agent_id: str, container_id: str | None) -> str | None:
        """The agent's gateway, at its container's address on the agent network (``None``
        while the container has no address: it is not running)."""
        container = self._observed.container(agent_id, container_id)
        if container is None or not container.address:
            return None
        return f"http://{container.address}:{self._port}"

    def health_url(self, agent_id: str, container_id: str) -> str | None:
        """Where ClawHQ probes an agent: its gateway's health path."""
        base = self.gateway_url(agent_id, container_id)
        return None if base is None else f"{base}{self._health_path}"

    @property
    def proxy_address(self) -> str:
        """Where ClawHQ's connections to agents come from (the agent network's gateway)."""
        return self._host.proxy_address
