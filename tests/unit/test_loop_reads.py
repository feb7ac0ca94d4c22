"""Reads on the API's event loop (``clawhq.db.loop_reads``): same answers as the ORM, and
never a stalled loop or a failed read because of what the database did meanwhile."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Column, MetaData, String, Table, bindparam, create_engine, select, text

from clawhq.db.loop_reads import PG_APPLICATION_NAME, SqliteLoopReads
from clawhq.db.models import Agent
from clawhq.services import agents
from clawhq.status import AgentStatus, DesiredState
from tests.conftest import Api


def test_agent_read_on_the_loop_matches_the_orm_view(fake_api: Api) -> None:
    """Every field, set to something, reads back the same as the ORM's listing shows it."""
    me = fake_api.user("pro")
    created = fake_api.client.post(
        "/api/agents", json={"name": "full", "apiKey": "sk-test-0000000000"}, headers=me
    ).json()
    when = datetime(2026, 11, 27, 8, 30, 15, 123456, tzinfo=UTC)
    with fake_api.context.sessions() as session:
        agent = session.get(Agent, created["id"])
        assert agent is not None
        agent.status = AgentStatus.RESTARTING
        agent.desired_state = DesiredState.RUNNING
        agent.last_error = "exited with code 137: ran out of memory"
        agent.last_exit_code = 137
        agent.oom_killed = True
        agent.restart_count = 3
        agent.next_restart_at = when + timedelta(seconds=20)
        agent.last_healthy_at = when
        agent.container_port = 19401
        agent.channels = ["telegram", "slack"]
        agent.total_messages = 12
        agent.total_tokens = 2**40
        agent.last_active_at = when - timedelta(minutes=5)
        agent.last_heartbeat = when - timedelta(seconds=7)
        agent.deployed_at = when - timedelta(hours=1)
        session.commit()

    one = fake_api.client.get(f"/api/agents/{created['id']}", headers=me).json()
    (listed,) = fake_api.client.get("/api/agents", headers=me).json()["agents"]
    assert one == listed
    assert one["nextRestartAt"] == "2026-11-27T08:30:35.123456Z"
    assert one["totalTokens"] == 2**40 and one["channels"] == ["telegram", "slack"]
    assert one["status"] == "RESTARTING" and one["oomKilled"] is True and one["hasApiKey"]


def test_deleted_and_foreign_agents_are_not_found_on_the_loop(fake_api: Api) -> None:
    me, other = fake_api.user(), fake_api.user()
    mine = fake_api.agent(me)
    theirs = fake_api.client.get(f"/api/agents/{mine['id']}", headers=other)
    assert theirs.status_code == 404 and theirs.json()["code"] == "agent_not_found"
    with fake_api.context.sessions() as session:
        agent = session.get(Agent, mine["id"])
        assert agent is not None
        agent.desired_state = DesiredState.DELETED
        session.commit()
    gone = fake_api.client.get(f"/api/agents/{mine['id']}", headers=me)
    assert gone.status_code == 404 and gone.json()["code"] == "agent_not_found"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_postgres_reads_survive_the_server_dropping_their_connections(fake_api: Api) -> None:
    me = fake_api.user()
    agent = fake_api.agent(me)
    assert fake_api.client.get(f"/api/agents/{agent['id']}", headers=me).status_code == 200
    with fake_api.context.engine.connect() as conn:
        dropped = conn.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = :name AND datname = current_database()"
            ),
            {"name": PG_APPLICATION_NAME},
        ).scalar_one()
    assert dropped >= 1
    # What a database restart does to a pool: the next read still answers.
    again = fake_api.client.get(f"/api/agents/{agent['id']}", headers=me)
    assert again.status_code == 200 and again.json()["id"] == agent["id"]


def test_sqlite_read_that_must_wait_leaves_the_loop_free(tmp_path: Path) -> None:
    """A locked database (here in rollback-journal mode, where a writer excludes readers) makes
    the loop's read go to the thread pool: the loop keeps running, and the read answers once the
    lock is gone."""
    path = tmp_path / "locked.db"
    setup = sqlite3.connect(path, isolation_level=None)
    setup.execute("CREATE TABLE agents (id TEXT PRIMARY KEY, name TEXT)")
    setup.execute("INSERT INTO agents VALUES ('a1', 'first')")
    url = f"sqlite:///{path}"
    reads = SqliteLoopReads(url, create_engine(url, connect_args={"timeout": 10}))
    table = Table(
        "agents", MetaData(), Column("id", String, primary_key=True), Column("name", String)
    )
    statement = select(table.c.id, table.c.name).where(table.c.id == bindparam("id"))

    async def scenario() -> tuple[dict | None, int]:
        setup.execute("BEGIN EXCLUSIVE")
        setup.execute("UPDATE agents SET name = 'second'")
        loop = asyncio.get_running_loop()
        loop.call_later(0.3, setup.execute, "COMMIT")
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        row = await reads.first(statement, id="a1")
        ticker.cancel()
        await reads.aclose()
        return row, ticks

    row, ticks = asyncio.run(scenario())
    assert row == {"id": "a1", "name": "second"}
    assert ticks >= 10  # the loop ran (and released the lock) while the read waited


def test_owner_view_has_exactly_the_public_fields() -> None:
    """What the view selects is what the API shows, plus what drift is computed from."""
    from clawhq.api.schemas import AgentPublic

    selected = {column.name for column in agents.OWNER_VIEW.selected_columns}
    # From the controller's cache, and from the plan and settings.
    computed = {"container_status", "up_to_date", "drift", "llm_access"}
    # ... and what those come from.
    inputs = {"applied_config", "plan_image", "plan_egress", "plan_bundled_keys"}
    assert selected == (set(AgentPublic.model_fields) - computed) | inputs
