"""The admin API of rollouts and image pins, over the in-memory runtime."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from clawhq.controller import rollouts
from clawhq.db.models import Agent, RolloutAgent
from clawhq.settings import Settings
from tests.conftest import TEST_IMAGE, Api, running_app
from tests.doubles.runtime import FakeRuntime
from tests.unit.test_abuse_and_audit import admin_headers
from tests.unit.test_api_agents import wait_status

NEW = "clawhq-test-agent:2"
BAD = "clawhq-test-agent:bad"


def deployed(api: Api, owner: dict[str, str], count: int) -> list[dict[str, Any]]:
    agents = [api.agent(owner) for _ in range(count)]
    for agent in agents:
        reply = api.client.post(f"/api/agents/{agent['id']}/deploy", headers=owner)
        assert reply.status_code == 202, reply.text
    return [wait_status(api, owner, agent["id"], "RUNNING") for agent in agents]


def wait_finished(api: Api, admin: dict[str, str], rollout_id: str) -> dict[str, Any]:
    for _ in range(500):
        body = api.client.get(f"/api/admin/rollouts/{rollout_id}", headers=admin).json()
        if body["finished"]:
            return body  # type: ignore[no-any-return]
        time.sleep(0.02)
    raise AssertionError(f"rollout did not finish: {body}")


def image_of(runtime: FakeRuntime, api: Api, owner: dict[str, str], agent_id: str) -> str:
    container = api.client.get(f"/api/agents/{agent_id}", headers=owner).json()["containerId"]
    return runtime.specs[container].image


def stuck_rollout(api: Api, agent_id: str) -> str:
    """A rollout whose one member waits on a step the controller was never asked for."""
    with api.context.sessions() as session:
        rollout = rollouts.start(
            session,
            selector={"agents": [agent_id]},
            image=None,
            max_unavailable=1,
            max_failures=1,
            created_by="test",
        )
        member = session.get(RolloutAgent, (rollout.id, agent_id))
        member.state, member.generation = "updating", 10_000
        session.commit()
        return rollout.id


def test_a_rollout_moves_every_agent_to_the_new_image(
    fake_api: Api, fake_runtime: FakeRuntime
) -> None:
    owner, admin = fake_api.user(plan="pro"), admin_headers(fake_api)
    agents = deployed(fake_api, owner, 3)
    ports = {a["id"]: a["containerPort"] for a in agents}
    fake_runtime.images.add(NEW)
    reply = fake_api.client.post(
        "/api/admin/rollouts",
        json={"image": NEW, "agents": [a["id"] for a in agents], "maxUnavailable": 2},
        headers=admin,
    )
    assert reply.status_code == 201, reply.text
    started = reply.json()
    assert (started["total"], started["image"], started["maxUnavailable"]) == (3, NEW, 2)
    assert started["selector"] == {"agents": [a["id"] for a in agents]}

    done = wait_finished(fake_api, admin, started["id"])
    assert (done["state"], done["progress"], done["counts"]["done"]) == ("completed", 100, 3)
    assert {m["previousImage"] for m in done["members"]} == {TEST_IMAGE}
    for agent in agents:
        now = wait_status(fake_api, owner, agent["id"], "RUNNING")
        assert now["containerPort"] == ports[agent["id"]]  # same port, same workspace volume
        assert image_of(fake_runtime, fake_api, owner, agent["id"]) == NEW
    listed = fake_api.client.get("/api/admin/rollouts", headers=admin).json()["rollouts"]
    assert [r["id"] for r in listed] == [started["id"]]
    audit = fake_api.client.get("/api/admin/audit?action=rollout.", headers=admin).json()
    assert audit["events"][0]["detail"] == f"rollout {started['id']}"


@pytest.fixture
def probing_app(make_settings: Callable[..., Settings], fake_runtime: FakeRuntime) -> Iterator[Api]:
    """The API where containers of the image ``BAD`` never answer healthy (1 s to do so)."""

    def probe(url: str) -> bool:
        address = urlsplit(url).hostname
        images = [c.image for c in fake_runtime.containers.values() if c.address == address]
        return bool(images) and images[-1] != BAD

    settings = make_settings(supervise=False, start_timeout=1, startup_poll_interval=0.05)
    with running_app(settings, fake_runtime, probe=probe) as api:
        yield api


def test_a_bad_image_is_rolled_back_and_stops_the_rollout(
    probing_app: Api, fake_runtime: FakeRuntime
) -> None:
    api = probing_app
    owner, admin = api.user(plan="pro"), admin_headers(api)
    agents = deployed(api, owner, 3)
    fake_runtime.images.add(BAD)
    reply = api.client.post("/api/admin/rollouts", json={"image": BAD, "all": True}, headers=admin)
    assert reply.status_code == 201, reply.text
    done = wait_finished(api, admin, reply.json()["id"])
    assert (done["state"], done["failures"]) == ("failed", 1)
    assert agents[0]["id"] in done["message"]
    states = [m["state"] for m in done["members"]]
    assert states == ["rolled_back", "pending", "pending"]
    assert done["members"][0]["reason"].startswith("rolled back: ")
    first = wait_status(api, owner, agents[0]["id"], "RUNNING")
    assert first["containerPort"] == agents[0]["containerPort"]
    assert image_of(fake_runtime, api, owner, agents[0]["id"]) == TEST_IMAGE
    with api.context.sessions() as session:
        assert session.get(Agent, agents[0]["id"]).image == TEST_IMAGE  # pinned there
    for untouched in agents[1:]:
        assert image_of(fake_runtime, api, owner, untouched["id"]) == TEST_IMAGE


def test_progress_streams_until_the_rollout_ends(fake_api: Api, fake_runtime: FakeRuntime) -> None:
    owner, admin = fake_api.user(plan="pro"), admin_headers(fake_api)
    agents = deployed(fake_api, owner, 2)
    fake_runtime.images.add(NEW)
    reply = fake_api.client.post(
        "/api/admin/rollouts",
        json={"image": NEW, "agents": [a["id"] for a in agents]},
        headers=admin,
    )
    rollout_id = reply.json()["id"]
    for how in ({"params": {"follow": "true"}}, {"headers": {"Accept": "text/event-stream"}}):
        headers = {**admin, **how.get("headers", {})}
        url = f"/api/admin/rollouts/{rollout_id}"
        with fake_api.client.stream("GET", url, headers=headers, params=how.get("params")) as s:
            assert s.headers["content-type"].startswith("text/event-stream")
            body = "".join(s.iter_text())
        events = [line[7:] for line in body.splitlines() if line.startswith("event: ")]
        data = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]
        assert events[-1] == "end" and set(events[:-1]) == {"progress"}
        assert data[-1]["state"] == "completed" and data[-1]["progress"] == 100
        progress = [d["progress"] for d in data]
        assert progress == sorted(progress)
    missing = fake_api.client.get("/api/admin/rollouts/nope?follow=true", headers=admin)
    assert (missing.status_code, missing.json()["code"]) == (404, "rollout_not_found")


def test_pause_resume_abort_and_one_rollout_at_a_time(fake_api: Api) -> None:
    owner, admin = fake_api.user(plan="pro"), admin_headers(fake_api)
    agent = fake_api.agent(owner)
    rollout_id = stuck_rollout(fake_api, agent["id"])
    base = f"/api/admin/rollouts/{rollout_id}"

    again = fake_api.client.post("/api/admin/rollouts", json={"all": True}, headers=admin)
    assert (again.status_code, again.json()["code"]) == (409, "rollout_in_progress")
    paused = fake_api.client.post(f"{base}/pause", headers=admin)
    assert (paused.status_code, paused.json()["state"]) == (200, "paused")
    resumed = fake_api.client.post(f"{base}/resume", headers=admin)
    assert (resumed.status_code, resumed.json()["state"]) == (200, "running")
    aborted = fake_api.client.post(f"{base}/abort", headers=admin).json()
    assert (aborted["state"], aborted["finished"]) == ("aborted", False)  # its member is in flight
    with fake_api.context.sessions() as session:
        member = session.get(RolloutAgent, (rollout_id, agent["id"]))
        member.state = "done"
        session.commit()
    fake_api.context.controller.enqueue_rollout(rollout_id)  # nothing in flight: it finishes
    for _ in range(200):
        if fake_api.client.get(base, headers=admin).json()["finished"]:
            break
        time.sleep(0.02)
    for action in ("pause", "resume", "abort"):
        refused = fake_api.client.post(f"{base}/{action}", headers=admin)
        assert (refused.status_code, refused.json()["code"]) == (409, "invalid_state"), action
    for action in ("pause", "resume", "abort"):
        missing = fake_api.client.post(f"/api/admin/rollouts/nope/{action}", headers=admin)
        assert (missing.status_code, missing.json()["code"]) == (404, "rollout_not_found")
    missing = fake_api.client.get("/api/admin/rollouts/nope", headers=admin)
    assert (missing.status_code, missing.json()["code"]) == (404, "rollout_not_found")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({}, 422, "validation_error"),
        ({"all": True, "plan": "pro"}, 422, "validation_error"),
        ({"all": True, "maxUnavailable": 0}, 422, "validation_error"),
        ({"all": True, "maxFailures": "2"}, 422, "validation_error"),
        ({"all": True, "colour": "red"}, 422, "validation_error"),
        ({"agents": []}, 422, "validation_error"),
        ({"all": True, "image": "no spaces allowed"}, 422, "validation_error"),
        ({"all": True, "image": "clawhq-test-agent:missing"}, 400, "image_not_found"),
        ({"agents": ["0123"]}, 400, "agent_not_found"),
        ({"plan": "gold"}, 400, "unknown_plan"),
        ({"plan": "team"}, 400, "no_agents_selected"),
    ],
)
def test_start_is_validated(fake_api: Api, body: dict[str, Any], status: int, code: str) -> None:
    fake_api.agent(fake_api.user(plan="pro"))
    reply = fake_api.client.post("/api/admin/rollouts", json=body, headers=admin_headers(fake_api))
    assert (reply.status_code, reply.json()["code"]) == (status, code), reply.text


def test_only_admins_touch_rollouts_and_pins(fake_api: Api) -> None:
    user = fake_api.user(plan="pro")
    agent = fake_api.agent(user)
    calls = [
        ("POST", "/api/admin/rollouts", {"all": True}),
        ("GET", "/api/admin/rollouts", None),
        ("GET", "/api/admin/rollouts/x", None),
        ("POST", "/api/admin/rollouts/x/pause", None),
        ("POST", "/api/admin/rollouts/x/resume", None),
        ("POST", "/api/admin/rollouts/x/abort", None),
        ("PATCH", "/api/admin/plans/pro", {"image": None}),
        ("PATCH", f"/api/admin/agents/{agent['id']}", {"image": None}),
    ]
    for method, path, body in calls:
        reply = fake_api.client.request(method, path, json=body, headers=user)
        assert (reply.status_code, reply.json()["code"]) == (403, "admin_required"), path
        assert fake_api.client.request(method, path, json=body).status_code == 401


def test_pins_change_the_spec_but_recreate_nothing(
    fake_api: Api, fake_runtime: FakeRuntime
) -> None:
    owner, admin = fake_api.user(plan="pro"), admin_headers(fake_api)
    (agent,) = deployed(fake_api, owner, 1)
    fake_runtime.images.add(NEW)
    plan = fake_api.client.patch("/api/admin/plans/pro", json={"image": NEW}, headers=admin)
    assert (plan.status_code, plan.json()) == (200, {"name": "pro", "image": NEW})
    pinned = fake_api.client.patch(
        f"/api/admin/agents/{agent['id']}", json={"image": TEST_IMAGE}, headers=admin
    )
    assert (pinned.status_code, pinned.json()) == (200, {"id": agent["id"], "image": TEST_IMAGE})
    cleared = fake_api.client.patch(
        f"/api/admin/agents/{agent['id']}", json={"image": None}, headers=admin
    )
    assert cleared.json() == {"id": agent["id"], "image": None}
    time.sleep(0.1)
    now = fake_api.client.get(f"/api/agents/{agent['id']}", headers=owner).json()
    assert (now["containerId"], now["status"]) == (agent["containerId"], "RUNNING")
    assert image_of(fake_runtime, fake_api, owner, agent["id"]) == TEST_IMAGE

    for path, code in (
        ("/api/admin/plans/gold", "plan_not_found"),
        ("/api/admin/agents/nope", "agent_not_found"),
    ):
        reply = fake_api.client.patch(path, json={"image": None}, headers=admin)
        assert (reply.status_code, reply.json()["code"]) == (404, code)
    missing = fake_api.client.patch(
        "/api/admin/plans/pro", json={"image": "nowhere:1"}, headers=admin
    )
    assert (missing.status_code, missing.json()["code"]) == (400, "image_not_found")
    assert fake_api.client.patch("/api/admin/plans/pro", json={}, headers=admin).status_code == 422
