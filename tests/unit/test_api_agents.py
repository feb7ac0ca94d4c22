"""The agent API over the in-memory runtime, on SQLite and PostgreSQL."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from clawhq.credentials import hash_token
from clawhq.errors import EngineError
from tests.conftest import Api, handed_secrets
from tests.doubles.runtime import FakeRuntime

SECRET = "sk-test-0123456789"


def wait_status(api: Api, headers: dict[str, str], agent_id: str, wanted: str) -> dict:
    for _ in range(200):
        body = api.client.get(f"/api/agents/{agent_id}", headers=headers).json()
        if body["status"] == wanted:
            return body
        time.sleep(0.02)
    raise AssertionError(f"agent stayed {body['status']}, wanted {wanted}: {body}")


def test_create_returns_camel_case_without_secrets(fake_api: Api) -> None:
    me = fake_api.user()
    agent = fake_api.agent(
        me,
        name="helper",
        channels=["telegram"],
        channelCredentials={"telegram": {"botToken": "123456789:AAE" + "x" * 32}},
    )
    assert agent["name"] == "helper"
    assert agent["modelProvider"] == "claude"
    assert agent["model"] == "claude-sonnet-4-20250514"
    assert agent["status"] == "STOPPED"
    assert agent["hasApiKey"] is True
    assert agent["usesBundledApi"] is False
    assert agent["channels"] == ["telegram"]
    assert agent["totalMessages"] == 0 and agent["totalTokens"] == 0
    assert agent["userId"] == me["X-User-Id"]
    text_body = str(agent)
    assert SECRET not in text_body
    assert "webhookToken" not in agent and "apiKey" not in agent


def test_list_wraps_agents_and_reports_live_container_status(fake_api: Api) -> None:
    me = fake_api.user(plan="pro")
    first = fake_api.agent(me)
    fake_api.agent(me)
    fake_api.client.post(f"/api/agents/{first['id']}/deploy", headers=me)
    wait_status(fake_api, me, first["id"], "RUNNING")
    body = fake_api.client.get("/api/agents", headers=me).json()
    statuses = {a["id"]: a["containerStatus"] for a in body["agents"]}
    assert statuses[first["id"]] == "running"
    assert sorted(statuses.values()) == ["missing", "running"]


def test_lifecycle_deploy_stop_start_delete(fake_api: Api, fake_runtime: FakeRuntime) -> None:
    me = fake_api.user()
    agent = fake_api.agent(me)
    reply = fake_api.client.post(f"/api/agents/{agent['id']}/deploy", headers=me)
    assert reply.status_code == 202
    assert reply.json()["status"] in ("DEPLOYING", "RUNNING")
    running = wait_status(fake_api, me, agent["id"], "RUNNING")
    assert 19400 <= running["containerPort"] <= 19499  # the first free port of the range
    assert running["deployedAt"] is not None

    stopped = fake_api.client.post(f"/api/agents/{agent['id']}/stop", headers=me)
    assert stopped.status_code == 200 and stopped.json()["status"] == "STOPPED"
    assert (
        fake_api.client.get(f"/api/agents/{agent['id']}", headers=me).json()["containerStatus"]
        == "exited"
    )

    assert fake_api.client.post(f"/api/agents/{agent['id']}/start", headers=me).status_code == 202
    again = wait_status(fake_api, me, agent["id"], "RUNNING")
    # A new container: the stop revoked the old one's LLM token.
    assert again["containerId"] != running["containerId"]

    assert (
        fake_api.client.delete(
            f"/api/agents/{agent['id']}?keepWorkspace=false", headers=me
        ).status_code
        == 204
    )
    assert fake_api.client.get(f"/api/agents/{agent['id']}", headers=me).status_code == 404
    assert fake_runtime.containers == {}
    assert fake_runtime.volumes == set()
    with fake_api.context.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM port_leases")).scalar() == 0


def test_delete_can_keep_the_workspace(fake_api: Api, fake_runtime: FakeRuntime) -> None:
    me = fake_api.user()
    agent = fake_api.agent(me)
    fake_api.client.post(f"/api/agents/{agent['id']}/deploy", headers=me)
    wait_status(fake_api, me, agent["id"], "RUNNING")
    reply = fake_api.client.delete(f"/api/agents/{agent['id']}", headers=me)
    assert reply.status_code == 204
    assert fake_runtime.containers == {}
    assert fake_runtime.volumes == {f"clawhq-workspace-{agent['id']}"}


def test_free_plan_allows_one_agent(fake_api: Api) -> None:
    me = fake_api.user()
    fake_api.agent(me)
    reply = fake_api.client.post(
        "/api/agents", json={"name": "second", "apiKey": SECRET}, headers=me
    )
    assert reply.status_code == 403
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.json()["code"] == "agent_limit_reached"


def test_bundled_keys_need_a_plan_that_allows_them(fake_api: Api) -> None:
    free = fake_api.user()
    reply = fake_api.client.post(
        "/api/agents", json={"name": "b", "usesBundledApi": True}, headers=free
    )
    assert reply.status_code == 403
    assert reply.json()["code"] == "bundled_keys_not_allowed"
    pro = fake_api.user(plan="pro")
    agent = fake_api.agent(pro, apiKey=None, usesBundledApi=True)
    assert agent["usesBundledApi"] is True and agent["hasApiKey"] is False
    # This ClawHQ has no bundled claude key configured: deploying says so and changes nothing.
    reply = fake_api.client.post(f"/api/agents/{agent['id']}/deploy", headers=pro)
    assert reply.status_code == 503
    assert reply.json()["code"] == "bundled_key_unavailable"
    assert (
        fake_api.client.get(f"/api/agents/{agent['id']}", headers=pro).json()["status"] == "STOPPED"
    )


def test_another_users_agent_is_invisible(fake_api: Api) -> None:
    alice, bob = fake_api.user(), fake_api.user()
    agent = fake_api.agent(alice)
    path = f"/api/agents/{agent['id']}"
    for method, suffix in [
        ("get", ""),
        ("post", "/deploy"),
        ("post", "/start"),
        ("post", "/stop"),
        ("delete", ""),
    ]:
        reply = fake_api.client.request(method, path + suffix, headers=bob)
        assert reply.status_code == 404, (method, suffix, reply.text)
        assert reply.json()["code"] == "agent_not_found"
    assert fake_api.client.get("/api/agents", headers=bob).json() == {"agents": []}
    assert fake_api.client.get(path, headers=alice).status_code == 200


def test_api_key_is_encrypted_at_rest(fake_api: Api) -> None:
    me = fake_api.user()
    agent = fake_api.agent(me, apiKey="sk-ant-PLANTED-KEY-0001")
    with fake_api.context.engine.connect() as conn:
        row = conn.execute(
            text("SELECT api_key_ciphertext, api_key_key_id FROM agents WHERE id = :id"),
            {"id": agent["id"]},
        ).one()
        dump = " ".join(str(r) for r in conn.execute(text("SELECT * FROM agents")).all())
    assert b"PLANTED" not in bytes(row[0])
    assert "PLANTED" not in dump
    assert row[1] == fake_api.context.keyring.current_key_id


def test_deploy_hands_fresh_tokens_and_never_the_provider_key_to_the_container(
    fake_api: Api, fake_runtime: FakeRuntime
) -> None:
    me = fake_api.user()
    agent = fake_api.agent(me, apiKey="sk-ant-for-the-container")
    deployed = fake_api.client.post(f"/api/agents/{agent['id']}/deploy", headers=me).json()
    spec = fake_runtime.specs[deployed["containerId"]]
    handed = handed_secrets(fake_runtime, deployed["containerId"])
    assert "sk-ant-for-the-container" not in str(spec) + str(handed)
    llm_token = handed["CLAWHQ_API_KEY"]
    assert llm_token.startswith("chqllm_")
    assert spec.env["CLAWHQ_LLM_BASE_URL"] == "http://127.0.0.1:9/llm/anthropic"
    token = handed["CLAWHQ_WEBHOOK_TOKEN"]
    assert not [v for v in spec.env.values() if token in v or llm_token in v]
    with fake_api.context.engine.connect() as conn:
        stored = conn.execute(
            text("SELECT webhook_token_hash, llm_token_hash FROM agents WHERE id = :id"),
            {"id": agent["id"]},
        ).one()
    assert token not in str(stored) and llm_token not in str(stored)
    assert stored.llm_token_hash == hash_token(llm_token)
    ok = fake_api.client.post(
        f"/api/agents/{agent['id']}/webhook",
        json={"type": "heartbeat"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert ok.status_code == 200


def test_engine_failure_on_create_leaves_nothing_and_says_why(
    fake_api: Api, fake_runtime: FakeRuntime
) -> None:
    me = fake_api.user()
    agent = fake_api.agent(me)
    fake_runtime.fail["start"] = EngineError("port is already allocated")
    reply = fake_api.client.post(f"/api/agents/{agent['id']}/deploy", headers=me)
    assert reply.status_code == 502
    assert reply.json()["code"] == "engine_error"
    body = fake_api.client.get(f"/api/agents/{agent['id']}", headers=me).json()
    assert body["status"] == "ERROR"
    assert "port is already allocated" in body["lastError"]
    assert body["containerId"] is None and body["containerPort"] is None
    assert fake_runtime.containers == {}
    with fake_api.context.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM port_leases")).scalar() == 0
    # Once the engine recovers, the same agent deploys.
    del fake_runtime.fail["start"]
    assert fake_api.client.post(f"/api/agents/{agent['id']}/deploy", headers=me).status_code == 202
    wait_status(fake_api, me, agent["id"], "RUNNING")


def test_missing_image_is_a_clear_error(fake_api: Api, fake_runtime: FakeRuntime) -> None:
    fake_runtime.images.clear()
    me = fake_api.user()
    agent = fake_api.agent(me)
    reply = fake_api.client.post(f"/api/agents/{agent['id']}/deploy", headers=me)
    assert reply.status_code == 502
    assert reply.json()["code"] == "image_not_found"
    body = fake_api.client.get(f"/api/agents/{agent['id']}", headers=me).json()
    assert body["status"] == "ERROR" and "image" in body["lastError"]


def test_crash_while_starting_is_reported(fake_api: Api, fake_runtime: FakeRuntime) -> None:
    # A probe that never succeeds, and a container that dies of OOM while we wait.
    fake_api.context.controller.prober.set_probe(lambda url: False)
    me = fake_api.user()
    agent = fake_api.agent(me)
    deployed = fake_api.client.post(f"/api/agents/{agent['id']}/deploy", headers=me).json()
    fake_runtime.crash(deployed["containerId"], exit_code=137, oom=True)
    body = wait_status(fake_api, me, agent["id"], "ERROR")
    assert "out of memory" in body["lastError"]
    assert fake_runtime.containers == {}


def test_operations_check_the_state_they_start_from(fake_api: Api) -> None:
    me = fake_api.user()
    agent = fake_api.agent(me)
    # Stopping a stopped agent is a no-op, not an error.
    assert fake_api.client.post(f"/api/agents/{agent['id']}/stop", headers=me).status_code == 200
    fake_api.client.post(f"/api/agents/{agent['id']}/deploy", headers=me)
    wait_status(fake_api, me, agent["id"], "RUNNING")
    # Starting a running agent is a no-op too.
    reply = fake_api.client.post(f"/api/agents/{agent['id']}/start", headers=me)
    assert reply.status_code == 202 and reply.json()["status"] == "RUNNING"


def test_deploys_in_flight_are_capped(settings, fake_runtime) -> None:
    from tests.conftest import running_app

    capped = settings.model_copy(update={"supervise": False, "max_deploys_in_flight": 1})
    with running_app(capped, fake_runtime, probe=lambda url: False) as api:
        me = api.user(plan="pro")
        first, second = api.agent(me), api.agent(me)
        assert api.client.post(f"/api/agents/{first['id']}/deploy", headers=me).status_code == 202
        reply = api.client.post(f"/api/agents/{second['id']}/deploy", headers=me)
        assert reply.status_code == 429
        assert reply.json()["code"] == "deploy_capacity_reached"
        assert reply.headers["retry-after"] == "5"
        assert (
            api.client.get(f"/api/agents/{second['id']}", headers=me).json()["status"] == "STOPPED"
        )


TELEGRAM = "123456789:AAE" + "x" * 32
SLACK = {"botToken": "xoxb-1234567890-abcdefghij", "appToken": "xapp-1-A0123456789-abcdef"}


def test_channel_credentials_are_checked_sealed_and_handed_to_the_container(
    fake_api: Api, fake_runtime: FakeRuntime
) -> None:
    me = fake_api.user()
    agent = fake_api.agent(
        me,
        channels=["telegram", "slack"],
        channelCredentials={"telegram": {"botToken": TELEGRAM}, "slack": SLACK},
    )
    assert TELEGRAM not in str(agent)
    assert "channelCredentials" not in agent
    with fake_api.context.engine.connect() as conn:
        row = conn.execute(
            text("SELECT channel_secrets_ciphertext FROM agents WHERE id = :id"),
            {"id": agent["id"]},
        ).one()
    assert TELEGRAM.encode() not in bytes(row[0])
    deployed = fake_api.client.post(f"/api/agents/{agent['id']}/deploy", headers=me).json()
    env = handed_secrets(fake_runtime, deployed["containerId"])
    assert TELEGRAM not in str(fake_runtime.specs[deployed["containerId"]].env)
    assert env["TELEGRAM_BOT_TOKEN"] == TELEGRAM
    assert env["SLACK_BOT_TOKEN"] == SLACK["botToken"]
    assert env["SLACK_APP_TOKEN"] == SLACK["appToken"]
    assert "DISCORD_BOT_TOKEN" not in env


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"channels": ["telegram"]}, "channelCredentials needed for: telegram"),
        (
            {"channels": ["telegram"], "channelCredentials": {"telegram": {"botToken": "nope"}}},
            "channelCredentials.telegram.botToken",
        ),
        (
            {"channels": [], "channelCredentials": {"telegram": {"botToken": TELEGRAM}}},
            "not listed: telegram",
        ),
        (
            {
                "channels": ["slack"],
                "channelCredentials": {"slack": {"botToken": "xoxb-123456789012"}},
            },
            "channelCredentials.slack.appToken",
        ),
        ({"channels": ["icq"]}, "channels.0"),
    ],
)
def test_channel_credentials_are_validated(fake_api: Api, body: dict, field: str) -> None:
    me = fake_api.user()
    reply = fake_api.client.post(
        "/api/agents", json={"name": "c", "apiKey": "sk-test-0123456789", **body}, headers=me
    )
    assert reply.status_code == 422
    assert field in reply.json()["detail"]
    assert TELEGRAM not in reply.text


def test_whatsapp_needs_no_credential_its_owner_links_it_in_the_control_ui(
    fake_api: Api,
) -> None:
    me = fake_api.user()
    reply = fake_api.client.post(
        "/api/agents",
        json={"name": "w", "apiKey": "sk-test-0123456789", "channels": ["whatsapp"]},
        headers=me,
    )
    assert reply.status_code == 201, reply.text
    assert reply.json()["channels"] == ["whatsapp"]


def test_models_and_migrations_agree(database_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from clawhq.db.engine import create_db_engine
    from clawhq.db.models import Base

    engine = create_db_engine(database_url)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    engine.dispose()
