"""Deploys that fail at any step leave no container, no lease, and an agent that says why."""

from __future__ import annotations

import socket

from tests.integration.helpers import containers_of, count_leases, deploy_running, wait_status


def assert_nothing_left(api, agent_id: str) -> None:
    assert containers_of(agent_id) == []
    assert count_leases(api) == 0


def test_agent_that_crashes_on_start(docker_app, image_variant) -> None:
    with docker_app(agent_image=image_variant("crash")) as api:
        me = api.user()
        agent = api.agent(me)
        assert api.client.post(f"/api/agents/{agent['id']}/deploy", headers=me).status_code == 202
        body = wait_status(api, me, agent["id"], "ERROR")
        assert "exited with code 3" in body["lastError"]
        assert "crashing on purpose" in body["lastError"]  # the log tail tells the user why
        assert body["containerId"] is None and body["containerPort"] is None
        assert_nothing_left(api, agent["id"])


def test_catch_all_200_is_not_healthy(docker_app, image_variant) -> None:
    with docker_app(agent_image=image_variant("catchall"), start_timeout=3) as api:
        me = api.user()
        agent = api.agent(me)
        api.client.post(f"/api/agents/{agent['id']}/deploy", headers=me)
        body = wait_status(api, me, agent["id"], "ERROR")
        assert "no healthy answer on /healthz within 3s" in body["lastError"]
        assert_nothing_left(api, agent["id"])


def test_missing_image(docker_app) -> None:
    with docker_app(agent_image="clawhq-no-such-image:never") as api:
        me = api.user()
        agent = api.agent(me)
        reply = api.client.post(f"/api/agents/{agent['id']}/deploy", headers=me)
        assert reply.status_code == 502
        assert reply.json()["code"] == "image_not_found"
        assert "clawhq image build" in reply.json()["detail"]
        body = api.client.get(f"/api/agents/{agent['id']}", headers=me).json()
        assert body["status"] == "ERROR"
        assert_nothing_left(api, agent["id"])


def test_pool_of_three_refuses_the_fourth_cleanly(docker_app) -> None:
    with docker_app(port_range="19610-19612") as api:
        me = api.user(plan="team")
        agents = [api.agent(me) for _ in range(4)]
        ports = {deploy_running(api, me, a["id"])["containerPort"] for a in agents[:3]}
        assert ports == {19610, 19611, 19612}

        reply = api.client.post(f"/api/agents/{agents[3]['id']}/deploy", headers=me)
        assert reply.status_code == 503
        assert reply.json()["code"] == "port_pool_exhausted"
        fourth = api.client.get(f"/api/agents/{agents[3]['id']}", headers=me).json()
        assert fourth["status"] == "STOPPED" and fourth["containerId"] is None
        assert containers_of(agents[3]["id"]) == []
        assert count_leases(api) == 3

        # Deleting one frees its port for the fourth.
        assert api.client.delete(f"/api/agents/{agents[0]['id']}", headers=me).status_code == 204
        assert deploy_running(api, me, agents[3]["id"])["containerPort"] in ports


def test_port_busy_on_the_host_is_skipped(docker_app) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 19620))
        squatter.listen()
        with docker_app(port_range="19620-19621") as api:
            me = api.user()
            body = deploy_running(api, me, api.agent(me)["id"])
            assert body["containerPort"] == 19621
