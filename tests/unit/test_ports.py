"""The port pool shared through the database, on SQLite and PostgreSQL."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor

import pytest

from clawhq.controller.ports import PortPool, host_port_free
from clawhq.db.engine import create_db_engine, make_session_factory
from clawhq.db.models import Agent, User
from clawhq.errors import PortPoolExhausted


def make_agents(sessions, count: int) -> list[str]:
    with sessions.begin() as session:
        user = User(email="ports@example.com", plan_name="team")
        session.add(user)
        session.flush()
        agents = [Agent(user_id=user.id, name=f"a{i}") for i in range(count)]
        session.add_all(agents)
        session.flush()
        return [a.id for a in agents]


def test_concurrent_leases_from_two_pools_never_collide(database_url: str) -> None:
    engine = create_db_engine(database_url)
    sessions = make_session_factory(engine)
    agent_ids = make_agents(sessions, 24)
    # Two pools, as two ClawHQ processes would have, sharing one database.
    pools = [PortPool((19700, 19719), "127.0.0.1", lambda ip, port: True) for _ in range(2)]

    def lease(i: int) -> int | None:
        try:
            with sessions.begin() as session:
                return pools[i % 2].lease(session, agent_ids[i])
        except PortPoolExhausted:
            return None

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lease, range(24)))
    granted = [p for p in results if p is not None]
    assert sorted(granted) == list(range(19700, 19720))  # every port once, none twice
    assert results.count(None) == 4
    # An agent that already holds a lease gets the same port back.
    with sessions.begin() as session:
        first = next(i for i, p in enumerate(results) if p is not None)
        assert pools[0].lease(session, agent_ids[first]) == results[first]
    engine.dispose()


def test_release_returns_the_port(database_url: str) -> None:
    engine = create_db_engine(database_url)
    sessions = make_session_factory(engine)
    one, two = make_agents(sessions, 2)
    pool = PortPool((19730, 19730), "127.0.0.1", lambda ip, port: True)
    with sessions.begin() as session:
        assert pool.lease(session, one) == 19730
    with sessions.begin() as session, pytest.raises(PortPoolExhausted, match="CLAWHQ_PORT_RANGE"):
        pool.lease(session, two)
    with sessions.begin() as session:
        pool.release(session, one)
    with sessions.begin() as session:
        assert pool.lease(session, two) == 19730
    engine.dispose()


def test_host_port_check_sees_listeners() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert host_port_free("127.0.0.1", port) is False
    assert host_port_free("127.0.0.1", port) is True
