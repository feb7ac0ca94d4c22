"""Supervision against the real engine: crashes, OOM kills, sick agents, things removed or
left behind, concurrent calls, and ClawHQ itself going away. Time is controlled through
settings (short intervals); nothing here asserts how fast anything happened."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import text

from clawhq.controller.spec import AgentSecrets, Placement, build_spec
from clawhq.runtime import labels
from tests.conftest import Api
from tests.integration.helpers import (
    containers_of,
    count_leases,
    deploy_running,
    run_container,
    sdk,
    wait_for,
    wait_restarted,
    wait_status,
)

FAST = {
    "restart_backoff_initial": 1,
    "restart_backoff_max": 4,
    "health_interval": 0.5,
    "health_failure_threshold": 2,
    "reconcile_interval": 2,
}


def resync(api: Api) -> int:
    """A full reconcile, waited for; how many actions it took."""
    before = api.context.controller.agents.acted
    api.context.sources.resync()
    assert api.context.controller.wait_idle()
    return api.context.controller.agents.acted - before


def test_killed_agent_is_restarted_and_says_why(docker_app) -> None:
    with docker_app(**FAST) as api:
        me = api.user()
        agent = api.agent(me)
        first = deploy_running(api, me, agent["id"])
        sdk().containers.get(first["containerId"]).kill()

        down = wait_status(api, me, agent["id"], "RESTARTING")
        assert down["lastExitCode"] == 137
        assert "exited with code 137" in down["lastError"]
        assert down["oomKilled"] is False

        back = wait_restarted(api, me, agent["id"])
        assert back["containerId"] == first["containerId"]  # the same container, started again
        assert len(containers_of(agent["id"])) == 1


def test_out_of_memory_is_reported_in_plain_words(docker_app, image_variant) -> None:
    with docker_app(agent_image=image_variant("oom"), agent_memory="48m", **FAST) as api:
        me = api.user()
        agent = api.agent(me)
        deploy_running(api, me, agent["id"])
        body = wait_for(
            lambda: (
                (b := api.client.get(f"/api/agents/{agent['id']}", headers=me).json())["oomKilled"]
                and b
            ),
            what="an OOM kill to be reported",
        )
        assert "ran out of memory" in body["lastError"]
        assert body["lastExitCode"] == 137
        assert body["status"] in ("RESTARTING", "RUNNING")


def test_agent_failing_health_checks_is_marked_and_restarted(docker_app, image_variant) -> None:
    with docker_app(agent_image=image_variant("sicken"), **FAST) as api:
        me = api.user()
        agent = api.agent(me)
        deploy_running(api, me, agent["id"])
        sick = wait_status(api, me, agent["id"], "UNHEALTHY")
        assert "health checks in a row" in sick["lastError"]
        wait_for(
            lambda: (
                api.client.get(f"/api/agents/{agent['id']}", headers=me).json()["restartCount"] >= 1
            ),
            what="a restart of the unhealthy agent",
        )


def test_a_users_stop_is_never_undone(docker_app) -> None:
    with docker_app(**FAST) as api:
        me = api.user()
        agent = api.agent(me)
        deploy_running(api, me, agent["id"])
        api.client.post(f"/api/agents/{agent['id']}/stop", headers=me)
        for _ in range(3):
            resync(api)
        body = api.client.get(f"/api/agents/{agent['id']}", headers=me).json()
        assert body["status"] == "STOPPED"
        assert body["containerStatus"] == "exited"


def test_container_removed_behind_clawhqs_back_is_recreated(docker_app) -> None:
    with docker_app(**FAST) as api:
        me = api.user()
        agent = api.agent(me)
        first = deploy_running(api, me, agent["id"])
        sdk().containers.get(first["containerId"]).remove(force=True)
        back = wait_for(
            lambda: (
                (b := api.client.get(f"/api/agents/{agent['id']}", headers=me).json())["status"]
                == "RUNNING"
                and b["containerId"] not in (None, first["containerId"])
                and b
            ),
            what="a new container",
        )
        assert [c.id for c in containers_of(agent["id"])] == [back["containerId"]]
        assert back["containerPort"] == first["containerPort"]
        assert count_leases(api) == 1


def test_orphan_labelled_container_is_removed(docker_app, docker_runtime, test_image) -> None:
    with docker_app(**FAST) as api:
        orphan = run_container(
            test_image,
            labels={
                labels.SERVICE: labels.SERVICE_AGENT,
                labels.AGENT_ID: "no-such-agent",
                labels.INSTANCE: api.context.instance_id,
            },
            network="clawhq-test-agents",
        )
        resync(api)
        assert containers_of("no-such-agent") == []
        del orphan


def test_crash_between_create_and_commit_converges(docker_app, docker_runtime) -> None:
    """The state a SIGKILL right after the engine created the container leaves behind: the row
    says DEPLOYING with no container recorded, a labelled container exists. A new ClawHQ adopts
    it: exactly one container, a consistent row."""
    with docker_app(supervise=False) as api:
        me = api.user()
        agent = api.agent(me)
        settings = api.context.settings
        with api.context.sessions.begin() as session:
            session.execute(
                text(
                    "UPDATE agents SET status = 'DEPLOYING', desired_state = 'RUNNING', "
                    "container_port = 19450 WHERE id = :id"
                ),
                {"id": agent["id"]},
            )
            session.execute(
                text("INSERT INTO port_leases (port, agent_id, leased_at) VALUES (19450, :id, :t)"),
                {"id": agent["id"], "t": "2026-01-01 00:00:00+00:00"},
            )
        from clawhq.db.models import Agent

        with api.context.sessions() as session:
            row = session.get(Agent, agent["id"])
            spec = build_spec(
                settings,
                row,
                19450,
                AgentSecrets("k", "t", "g"),
                Placement("http://x:1", api.context.instance_id),
            )
        docker_runtime.ensure_network(settings.agent_network)
        created = docker_runtime.create(spec)
        docker_runtime.start(created.id)

    with docker_app(**FAST) as api:  # ClawHQ comes back
        body = wait_status(api, me, agent["id"], "RUNNING")
        assert body["containerId"] == created.id
        assert [c.id for c in containers_of(agent["id"])] == [created.id]
        assert count_leases(api) == 1


def test_stopping_clawhq_leaves_agents_running_and_a_new_one_adopts_them(docker_app) -> None:
    with docker_app(**FAST) as api:
        me = api.user()
        agent = api.agent(me)
        first = deploy_running(api, me, agent["id"])
    assert sdk().containers.get(first["containerId"]).status == "running"
    with docker_app(**FAST) as api:
        assert resync(api) == 0  # nothing to do: the agent runs as it should
        body = api.client.get(f"/api/agents/{agent['id']}", headers=me).json()
        assert body["status"] == "RUNNING"
        assert body["containerId"] == first["containerId"]
        assert body["restartCount"] == 0


def test_concurrent_start_and_stop_end_in_one_consistent_state(docker_app) -> None:
    with docker_app(**FAST) as api:
        me = api.user()
        agent = api.agent(me)
        deploy_running(api, me, agent["id"])
        calls = [random.choice(["start", "stop"]) for _ in range(20)]

        def call(action: str) -> int:
            return api.client.post(f"/api/agents/{agent['id']}/{action}", headers=me).status_code

        with ThreadPoolExecutor(20) as pool:
            codes = list(pool.map(call, calls))
        assert set(codes) <= {200, 202, 409}, codes

        body = wait_status(api, me, agent["id"], "RUNNING", "STOPPED")
        found = containers_of(agent["id"])
        assert len(found) == 1
        found[0].reload()
        expected = "running" if body["status"] == "RUNNING" else "exited"
        assert found[0].status == expected
        assert count_leases(api) == 1


def test_two_clawhq_processes_on_one_database(docker_app) -> None:
    """Two orchestrators and two supervisors share a database: a crash is handled once."""
    with docker_app(**FAST) as one, docker_app(**FAST) as two:
        me = one.user()
        agent = one.agent(me)
        deploy_running(one, me, agent["id"])

        def call(i: int) -> int:
            api = (one, two)[i % 2]
            action = ("stop", "start")[i // 2 % 2]
            return api.client.post(f"/api/agents/{agent['id']}/{action}", headers=me).status_code

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(call, range(16)))
        two.client.post(f"/api/agents/{agent['id']}/start", headers=me)
        running = wait_status(two, me, agent["id"], "RUNNING")
        sdk().containers.get(running["containerId"]).kill()
        back = wait_restarted(one, me, agent["id"])
        assert [c.id for c in containers_of(agent["id"])] == [back["containerId"]]
        assert count_leases(one) == 1


def test_installations_sharing_an_engine_leave_each_other_alone(
    docker_app, make_settings, sqlite_url, tmp_path
) -> None:
    """A second ClawHQ with its own database on the same engine neither adopts nor removes
    the first one's containers."""
    from tests.conftest import running_app

    other_db = f"sqlite:///{tmp_path / 'other.db'}"
    from clawhq.db import migrate
    from clawhq.db.engine import create_db_engine

    engine = create_db_engine(other_db)
    migrate.upgrade(engine)
    engine.dispose()
    with docker_app(**FAST) as api:
        me = api.user()
        agent = api.agent(me)
        running = deploy_running(api, me, agent["id"])
        with running_app(make_settings(database_url=other_db, **FAST)) as other:
            assert resync(other) == 0
            assert other.client.get("/metrics").status_code == 200
        assert sdk().containers.get(running["containerId"]).status == "running"


def test_crash_is_noticed_from_engine_events_alone(docker_app) -> None:
    """With reconciliation and probes an hour apart, only the event stream can notice.

    Docker's list endpoint still says ``running`` right after the ``die`` event (on a busy
    machine, every time): the sync inspects the container the event named."""
    slow = {**FAST, "reconcile_interval": 3600, "health_interval": 3600}
    with docker_app(**slow) as api:
        me = api.user()
        agent = api.agent(me)
        running = deploy_running(api, me, agent["id"])
        sdk().containers.get(running["containerId"]).kill()
        noticed = wait_for(
            lambda: (
                (b := api.client.get(f"/api/agents/{agent['id']}", headers=me).json())[
                    "lastExitCode"
                ]
                == 137
                and b
            ),
            timeout=30,
            what="the crash to be noticed",
        )
        assert noticed["status"] in ("RESTARTING", "RUNNING")
