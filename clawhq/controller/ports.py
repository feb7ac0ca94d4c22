"""The host port pool. Leases live in the database, so every ClawHQ process shares one pool."""

from __future__ import annotations

import socket
from collections.abc import Callable

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from clawhq.db.models import PortLease
from clawhq.errors import PortPoolExhausted


def host_port_free(host_ip: str, port: int) -> bool:
    """Whether nothing on this host listens on ``host_ip:port`` (so Docker can publish it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host_ip, port))
        except OSError:
            return False
        return True


class PortPool:
    """Hands out ports from ``[low, high]``; a port busy on the host is skipped."""

    def __init__(
        self,
        port_range: tuple[int, int],
        host_ip: str,
        is_free: Callable[[str, int], bool] = host_port_free,
    ) -> None:
        self.low, self.high = port_range
        self.host_ip = host_ip
        self.is_free = is_free

    def lease(self, session: Session, agent_id: str) -> int:
        """The agent's port: its current lease, or a new one. Runs in the caller's transaction."""
        held = session.scalar(select(PortLease.port).where(PortLease.agent_id == agent_id))
        if held is not None:
            return held
        taken = set(
            session.scalars(
                select(PortLease.port).where(PortLease.port.between(self.low, self.high))
            )
        )
        for port in range(self.low, self.high + 1):
            if port in taken or not self.is_free(self.host_ip, port):
                continue
            try:
                with session.begin_nested():
                    session.add(PortLease(port=port, agent_id=agent_id))
            except IntegrityError:
                continue  # another process leased it a moment ago
            return port
        raise PortPoolExhausted(
            f"no free port left in CLAWHQ_PORT_RANGE {self.low}-{self.high}: "
            "stop or delete an agent, or widen the range"
        )

    def release(self, session: Session, agent_id: str) -> None:
        session.execute(delete(PortLease).where(PortLease.agent_id == agent_id))

    def in_use(self, session: Session) -> int:
        return len(
            session.scalars(
                select(PortLease.port).where(PortLease.port.between(self.low, self.high))
            ).all()
        )
