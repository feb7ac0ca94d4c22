"""Accounts, tokens and error bodies, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from datetime import timedelta

from clawhq.db.models import ApiToken
from tests.conftest import Api


def test_register_login_me(fake_api: Api) -> None:
    creds = {"email": "Ada@Example.com", "password": "correct horse battery"}
    reply = fake_api.client.post("/api/auth/register", json=creds)
    assert reply.status_code == 201
    assert reply.json()["user"]["email"] == "ada@example.com"
    assert reply.json()["user"]["plan"] == "free"
    again = fake_api.client.post("/api/auth/register", json=creds)
    assert again.status_code == 409 and again.json()["code"] == "email_taken"

    login = fake_api.client.post("/api/auth/login", json=creds)
    assert login.status_code == 200
    token = login.json()["token"]
    me = fake_api.client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["email"] == "ada@example.com"


def test_wrong_password_and_unknown_email_look_the_same(fake_api: Api) -> None:
    fake_api.client.post(
        "/api/auth/register", json={"email": "b@example.com", "password": "correct horse battery"}
    )
    wrong = fake_api.client.post(
        "/api/auth/login", json={"email": "b@example.com", "password": "wrong password!"}
    )
    unknown = fake_api.client.post(
        "/api/auth/login", json={"email": "nobody@example.com", "password": "wrong password!"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["code"] == unknown.json()["code"] == "invalid_credentials"
    assert wrong.headers["www-authenticate"] == "Bearer"


def test_tokens_are_required_checked_and_expire(fake_api: Api) -> None:
    assert fake_api.client.get("/api/agents").json()["code"] == "unauthorized"
    bad = fake_api.client.get("/api/agents", headers={"Authorization": "Bearer chq_nope"})
    assert bad.status_code == 401 and bad.json()["code"] == "invalid_token"
    me = fake_api.user()
    from clawhq.db.models import User
    from clawhq.services import users

    with fake_api.context.sessions() as session:
        user = session.get(User, me["X-User-Id"])
        short = users.issue_token(session, user, "short", timedelta(seconds=1))
        session.commit()
    headers = {"Authorization": f"Bearer {short}"}
    # Used once (so the API remembers it), then past its expiry: refused all the same.
    assert fake_api.client.get("/api/agents", headers=headers).status_code == 200
    time.sleep(1.1)
    expired = fake_api.client.get("/api/agents", headers=headers)
    assert expired.status_code == 401 and expired.json()["code"] == "token_expired"


def test_tokens_are_stored_hashed(fake_api: Api) -> None:
    me = fake_api.user()
    token = me["Authorization"].split()[1]
    with fake_api.context.sessions() as session:
        stored = [t.token_hash for t in session.query(ApiToken).all()]
    assert token not in stored and len(stored) == 1


def test_validation_errors_name_the_field_and_never_echo_secrets(fake_api: Api) -> None:
    me = fake_api.user()
    reply = fake_api.client.post(
        "/api/agents",
        json={"name": "", "apiKey": "sk secret with spaces", "modelProvider": "skynet"},
        headers=me,
    )
    assert reply.status_code == 422
    body = reply.json()
    assert reply.headers["content-type"] == "application/problem+json"
    assert body["code"] == "validation_error"
    fields = {e["field"] for e in body["errors"]}
    assert {"name", "apiKey", "modelProvider"} <= fields
    assert "sk secret with spaces" not in reply.text


def test_a_key_or_bundled_use_is_required(fake_api: Api) -> None:
    me = fake_api.user()
    reply = fake_api.client.post("/api/agents", json={"name": "nokey"}, headers=me)
    assert reply.status_code == 422
    assert "apiKey" in reply.json()["detail"]


def test_duplicate_agent_names_are_a_conflict(fake_api: Api) -> None:
    me = fake_api.user(plan="pro")
    fake_api.agent(me, name="twin")
    reply = fake_api.client.post(
        "/api/agents", json={"name": "twin", "apiKey": "sk-test-0123456789"}, headers=me
    )
    assert reply.status_code == 409 and reply.json()["code"] == "agent_name_taken"


def test_unknown_routes_are_problems_too(fake_api: Api) -> None:
    reply = fake_api.client.get("/api/nothing-here")
    assert reply.status_code == 404
    assert reply.json()["code"] == "not_found"
    assert reply.headers["content-type"] == "application/problem+json"


def test_openapi_lists_the_seed_endpoints(fake_api: Api) -> None:
    paths = fake_api.client.get("/openapi.json").json()["paths"]
    assert set(paths["/api/agents"]) == {"get", "post"}
    assert set(paths["/api/agents/{agent_id}"]) == {"get", "delete"}
    for action in ("deploy", "start", "stop", "webhook"):
        assert "post" in paths[f"/api/agents/{{agent_id}}/{action}"]
    assert "/api/auth/register" in paths and "/api/auth/login" in paths


def test_admin_changes_plans_and_others_cannot(fake_api: Api) -> None:
    from clawhq.services import users

    with fake_api.context.sessions() as session:
        admin = users.create_user(session, "root@example.com", is_admin=True)
        token = users.issue_token(session, admin, "test", None)
        session.commit()
    admin_headers = {"Authorization": f"Bearer {token}"}
    someone = fake_api.user()
    path = f"/api/admin/users/{someone['X-User-Id']}"
    denied = fake_api.client.patch(path, json={"plan": "team"}, headers=someone)
    assert denied.status_code == 403 and denied.json()["code"] == "admin_required"
    changed = fake_api.client.patch(path, json={"plan": "team"}, headers=admin_headers)
    assert changed.status_code == 200 and changed.json()["plan"] == "team"
    unknown = fake_api.client.patch(path, json={"plan": "gold"}, headers=admin_headers)
    assert unknown.status_code == 400 and unknown.json()["code"] == "unknown_plan"
    # Both are on record (the successful change once lost its row on SQLite: the request's own
    # transaction held the lock the audit write waited on for 30 s).
    trail = fake_api.client.get(
        "/api/admin/audit", params={"action": "admin.plan_change"}, headers=admin_headers
    ).json()["events"]
    assert [(e["result"], e["targetUserId"]) for e in trail] == [
        ("error:unknown_plan", someone["X-User-Id"]),
        ("ok", someone["X-User-Id"]),
    ]
