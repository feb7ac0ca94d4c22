"""Rate limits, body limits, the audit log, key rotation and the admin API (issue 6)."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from clawhq.api.ratelimit import RateLimiter
from clawhq.crypto import Keyring, Sealed, generate_key
from clawhq.db.models import api_key_context
from clawhq.setting_values import decode_encryption_key
from tests.conftest import Api, handed_secrets, running_app
from tests.doubles.runtime import FakeRuntime

PLANTED = "sk-ant-PLANTED-audit-0xC0FFEE"


def test_token_bucket() -> None:
    now = [0.0]
    limiter = RateLimiter(3, window=60, clock=lambda: now[0])
    assert [limiter.retry_after("ip") for _ in range(3)] == [0, 0, 0]
    assert limiter.retry_after("ip") == pytest.approx(20)  # one token per 20 s
    assert limiter.retry_after("other") == 0  # budgets are per key
    now[0] = 20
    assert limiter.retry_after("ip") == 0


def test_login_and_register_are_rate_limited_per_address(settings, fake_runtime) -> None:
    tight = settings.model_copy(update={"supervise": False, "rate_limit_auth": 3})
    with running_app(tight, fake_runtime) as api:
        body = {"email": "x@example.com", "password": "wrong password!"}
        codes = [api.client.post("/api/auth/login", json=body).status_code for _ in range(4)]
        assert codes == [401, 401, 401, 429]
        limited = api.client.post("/api/auth/register", json=body)
        assert limited.status_code == 429
        assert limited.json()["code"] == "rate_limited"
        assert int(limited.headers["retry-after"]) >= 1


def test_users_are_rate_limited(settings, fake_runtime) -> None:
    tight = settings.model_copy(update={"supervise": False, "rate_limit_user": 5})
    with running_app(tight, fake_runtime) as api:
        me = api.user()
        codes = [api.client.get("/api/agents", headers=me).status_code for _ in range(7)]
        assert codes[:5] == [200] * 5
        assert codes[-1] == 429
        other = api.user()
        assert api.client.get("/api/agents", headers=other).status_code == 200


def test_oversized_bodies_are_refused(fake_api: Api) -> None:
    me = fake_api.user()
    reply = fake_api.client.post(
        "/api/agents", content=b'{"name": "' + b"x" * 70_000 + b'"}', headers=me
    )
    assert reply.status_code == 413
    assert reply.json()["code"] == "payload_too_large"
    # Without a Content-Length (chunked), the limit holds while the body is read.
    chunks = iter([b'{"name": "', b"x" * 40_000, b"y" * 40_000, b'"}'])
    streamed = fake_api.client.post("/api/agents", content=chunks, headers=me)
    assert streamed.status_code == 413
    assert streamed.headers["content-type"] == "application/problem+json"


def admin_headers(api: Api) -> dict[str, str]:
    from clawhq.services import users

    with api.context.sessions() as session:
        admin = users.create_user(session, f"admin-{id(api)}@example.com", is_admin=True)
        token = users.issue_token(session, admin, "test", None)
        session.commit()
    return {"Authorization": f"Bearer {token}", "X-User-Id": admin.id}


def test_audit_log_records_who_did_what_and_never_secrets(fake_api: Api) -> None:
    me = fake_api.user()
    agent = fake_api.agent(me, apiKey=PLANTED)
    fake_api.client.post(f"/api/agents/{agent['id']}/deploy", headers=me)
    fake_api.client.post(f"/api/agents/{agent['id']}/stop", headers=me)
    fake_api.client.post(f"/api/agents/{agent['id']}/start", headers={"Authorization": "Bearer x"})
    bad = {"email": "nobody@example.com", "password": "not the password"}
    fake_api.client.post("/api/auth/login", json=bad)
    admin = admin_headers(fake_api)

    mine = fake_api.client.get(f"/api/admin/audit?agentId={agent['id']}", headers=admin).json()[
        "events"
    ]
    assert [e["action"] for e in reversed(mine)] == ["agent.create", "agent.deploy", "agent.stop"]
    assert all(e["userId"] == me["X-User-Id"] and e["actor"] == "user" for e in mine)
    assert all(e["result"] == "ok" and e["requestId"] for e in mine)
    failed = fake_api.client.get("/api/admin/audit?action=auth.login", headers=admin).json()
    assert any(
        e["result"] == "error:invalid_credentials" and "nobody@example.com" in e["detail"]
        for e in failed["events"]
    )
    whole = fake_api.client.get("/api/admin/audit?limit=500", headers=admin).text
    assert PLANTED not in whole
    assert "not the password" not in whole


def test_audit_log_is_append_only(fake_api: Api) -> None:
    me = fake_api.user()
    fake_api.agent(me)
    with fake_api.context.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM audit_events")).scalar()
    for statement in ("UPDATE audit_events SET result = 'ok'", "DELETE FROM audit_events"):
        with (
            pytest.raises(DBAPIError, match="append-only"),
            fake_api.context.engine.begin() as conn,
        ):
            conn.execute(text(statement))


def test_failed_operations_are_audited_with_their_code(
    fake_api: Api, fake_runtime: FakeRuntime
) -> None:
    fake_runtime.images.clear()
    me = fake_api.user()
    agent = fake_api.agent(me)
    fake_api.client.post(f"/api/agents/{agent['id']}/deploy", headers=me)
    admin = admin_headers(fake_api)
    events = fake_api.client.get(
        f"/api/admin/audit?agentId={agent['id']}&action=agent.deploy", headers=admin
    ).json()["events"]
    assert events[0]["result"] == "error:image_not_found"


def test_admins_see_everyone_and_can_stop_any_agent(fake_api: Api) -> None:
    alice = fake_api.user()
    agent = fake_api.agent(alice)
    fake_api.client.post(f"/api/agents/{agent['id']}/deploy", headers=alice)
    admin = admin_headers(fake_api)
    listed = fake_api.client.get("/api/admin/users?limit=500", headers=admin).json()
    assert alice["X-User-Id"] in {u["id"] for u in listed["users"]}
    assert listed["total"] >= 2
    agents = fake_api.client.get(
        f"/api/admin/agents?userId={alice['X-User-Id']}", headers=admin
    ).json()["agents"]
    assert [a["id"] for a in agents] == [agent["id"]]
    stopped = fake_api.client.post(f"/api/admin/agents/{agent['id']}/stop", headers=admin)
    assert stopped.status_code == 200
    assert stopped.json()["status"] == "STOPPED"
    assert fake_api.client.get("/api/admin/users", headers=alice).status_code == 403
    too_many = fake_api.client.get("/api/admin/users?limit=100000", headers=admin)
    assert too_many.status_code == 422


def test_key_rotation_round_trips(settings, fake_runtime) -> None:
    from clawhq.db.models import Agent
    from clawhq.services import keys

    old_key, new_key = settings.encryption_key.get_secret_value(), generate_key()  # type: ignore[union-attr]
    telegram = "123456789:AAE" + "y" * 32
    with running_app(settings.model_copy(update={"supervise": False}), fake_runtime) as api:
        me = api.user()
        agent = api.agent(
            me,
            apiKey=PLANTED,
            channels=["telegram"],
            channelCredentials={"telegram": {"botToken": telegram}},
        )
        old_id = api.context.keyring.current_key_id
    rotated = settings.model_copy(
        update={
            "supervise": False,
            "encryption_key": __import__("pydantic").SecretStr(new_key),
            "encryption_keys_old": (__import__("pydantic").SecretStr(old_key),),
        }
    )
    with running_app(rotated, fake_runtime) as api:
        report = keys.rotate(api.context.sessions, api.context.keyring)
        assert report.rotated == 1
        assert keys.rotate(api.context.sessions, api.context.keyring).rotated == 0
        with api.context.sessions() as session:
            row = session.get(Agent, agent["id"])
            assert row.api_key_key_id == row.channel_secrets_key_id == report.key_id != old_id
    # The old key is no longer needed: a keyring with only the new key deploys the agent.
    only_new = Keyring(decode_encryption_key(new_key))
    with running_app(rotated.model_copy(update={"encryption_keys_old": ()}), fake_runtime) as api:
        assert api.context.keyring.current_key_id == only_new.current_key_id
        deployed = api.client.post(f"/api/agents/{agent['id']}/deploy", headers=me).json()
        env = handed_secrets(fake_runtime, deployed["containerId"])
        assert env["TELEGRAM_BOT_TOKEN"] == telegram
        assert PLANTED not in env.values()  # the key stays with ClawHQ's LLM gateway ...
        with api.context.sessions() as session:  # ... which opens it with the new key alone
            row = session.get(Agent, agent["id"])
            sealed = Sealed(row.api_key_ciphertext, str(row.api_key_key_id))
        assert api.context.keyring.open(sealed, api_key_context(agent["id"])) == PLANTED


def test_event_cursors_beyond_the_id_range_are_refused(fake_api: Api) -> None:
    """A ``before`` past the INTEGER key's range was a 500 on PostgreSQL (found by fuzzing)."""
    me = fake_api.user()
    agent = fake_api.agent(me)
    admin = admin_headers(fake_api)
    for path, headers in (
        (f"/api/agents/{agent['id']}/events", me),
        ("/api/admin/audit", admin),
    ):
        last = fake_api.client.get(path, params={"before": 2**31 - 1}, headers=headers)
        assert last.status_code == 200, last.text
        beyond = fake_api.client.get(path, params={"before": 2**31}, headers=headers)
        assert beyond.status_code == 422, beyond.text
        assert beyond.json()["code"] == "validation_error"


def test_audit_filters_refuse_bytes_a_database_cannot_hold(fake_api: Api) -> None:
    """Found by the fuzzer: a NUL in ``agentId`` answered 500 on PostgreSQL."""
    admin = admin_headers(fake_api)
    for query in ("agentId=p%00", "userId=%00", "agentId=a%20b"):
        reply = fake_api.client.get(f"/api/admin/audit?{query}", headers=admin)
        assert reply.status_code == 422, (query, reply.text)
        assert reply.json()["code"] == "validation_error"


def register(api: Api, n: int) -> int:
    return api.client.post(
        "/api/auth/register",
        json={"email": f"r{n}-{id(api)}@example.com", "password": "correct horse battery"},
    ).status_code


def test_new_accounts_are_limited_per_address_and_in_total(settings, fake_runtime) -> None:
    """Issue 13, item 7: free accounts are no way to take the shared port pool by numbers."""
    capped = settings.model_copy(update={"supervise": False, "max_users": 2})
    with running_app(capped, fake_runtime) as api:
        assert [register(api, n) for n in range(2)] == [201, 201]
        refused = api.client.post(
            "/api/auth/register",
            json={"email": "late@example.com", "password": "correct horse battery"},
        )
        assert refused.status_code == 403 and refused.json()["code"] == "registration_closed"
    per_address = settings.model_copy(update={"supervise": False, "rate_limit_register": 2})
    with running_app(per_address, fake_runtime) as api:
        assert [register(api, n) for n in range(10, 13)] == [201, 201, 429]
