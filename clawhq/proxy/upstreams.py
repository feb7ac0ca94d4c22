"""Which gateway a proxied request goes to, and whether it may go there at all.

Only the agent's owner gets through (anyone else is told the agent does not exist, as
everywhere in the API); only a running agent with an address on the agent network; and the
request carries the container's proxy identity, the secret its gateway trusts
(docs/agent-access.md).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import bindparam, select

from clawhq.crypto import Keyring, Sealed
from clawhq.db.loop_reads import LoopReads
from clawhq.db.models import Agent, proxy_identity_context
from clawhq.errors import AgentNotRunning, NotFound
from clawhq.status import AgentStatus as S
from clawhq.status import DesiredState

#: States in which traffic goes through (an unhealthy gateway may still answer).
SERVING = frozenset({S.RUNNING, S.UNHEALTHY})
#: States an agent passes through on its own: worth retrying in a moment.
TRANSIENT = frozenset({S.DEPLOYING, S.RESTARTING, S.STOPPING})
_agents = Agent.__table__.c
_ROUTE = select(
    _agents.user_id,
    _agents.status,
    _agents.desired_state,
    _agents.container_id,
    _agents.proxy_identity_ciphertext,
    _agents.proxy_identity_key_id,
).where(_agents.id == bindparam("agent_id"))


@dataclass(frozen=True)
class Upstream:
    """One agent's gateway, as the proxy talks to it."""

    agent_id: str
    user_id: str
    base_url: str  # http://<container address>:18789
    identity: str
    proxy_address: str = ""  # where ClawHQ's connections to it come from


class GatewayLocator(Protocol):
    """Where agents' gateways answer (:class:`clawhq.controller.gateways.Gateways`)."""

    def gateway_url(self, agent_id: str, container_id: str | None) -> str | None: ...

    @property
    def proxy_address(self) -> str: ...


class Upstreams:
    """Finds the gateway for ``(user, agent)``; the opened identities are cached per container."""

    def __init__(self, gateways: GatewayLocator, keyring: Keyring, reads: LoopReads) -> None:
        self._gateways = gateways
        self._keyring = keyring
        self._reads = reads
        self._lock = threading.Lock()
        self._identities: dict[tuple[str, str, str, bytes], str] = {}

    async def resolve(self, user_id: str, agent_id: str) -> Upstream:
        """The owner's running agent, or a problem saying why not (read on the event loop:
        every proxied request makes this read)."""
        row = await self._reads.first(_ROUTE, agent_id=agent_id)
        deleted = row is not None and row["desired_state"] == DesiredState.DELETED.value
        if row is None or row["user_id"] != user_id or deleted:
            raise NotFound(f"agent {agent_id} not found", code="agent_not_found")
        status = S(row["status"])
        if status not in SERVING:
            raise AgentNotRunning(
                f"the agent is {status.value}, not running: "
                + ("try again in a moment" if status in TRANSIENT else "start it first"),
                agent_status=status.value,
                transient=status in TRANSIENT,
            )
        base = self._gateways.gateway_url(agent_id, row["container_id"])
        ciphertext, key_id = row["proxy_identity_ciphertext"], row["proxy_identity_key_id"]
        if base is None or ciphertext is None or not key_id:
            raise AgentNotRunning(
                "the agent's container is not running right now; try again in a moment",
                agent_status=status.value,
                transient=True,
            )
        sealed = Sealed(bytes(ciphertext), key_id)
        identity = self._identity(agent_id, row["container_id"] or "", sealed)
        return Upstream(agent_id, user_id, base, identity, self._gateways.proxy_address)

    def _identity(self, agent_id: str, container_id: str, sealed: Sealed) -> str:
        # The identity rotates with every start, of a new container or of the same one.
        key = (agent_id, container_id, sealed.key_id, sealed.ciphertext)
        with self._lock:
            found = self._identities.get(key)
        if found is None:
            found = self._keyring.open(sealed, proxy_identity_context(agent_id))
            with self._lock:
                if len(self._identities) > 10_000:
                    self._identities.clear()
                self._identities[key] = found
        return found
