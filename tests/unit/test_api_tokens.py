"""API tokens can be revoked: logout, one's own tokens, an admin's revocation, CLI expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from typer.testing import CliRunner

from clawhq.cli import app as cli
from clawhq.db.models import ApiToken, AuditEvent
from tests.conftest import Api

PASSWORD = "correct horse battery"


def login(api: Api, headers: dict[str, str]) -> dict[str, str]:
    """A second token of the same user (the one of ``headers`` stays valid)."""
    email = api.client.get("/api/auth/me", headers=headers).json()["email"]
    reply = api.client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert reply.status_code == 200, reply.text
    return {"Authorization": f"Bearer {reply.json()['token']}", "X-User-Id": headers["X-User-Id"]}


def actions(api: Api, user_id: str) -> list[tuple[str, str]]:
    with api.context.sessions() as session:
        query = select(AuditEvent).where(AuditEvent.user_id == user_id).order_by(AuditEvent.id)
        return [(e.action, e.result) for e in session.scalars(query)]


def test_logout_revokes_the_calling_token_at_once(fake_api: Api) -> None:
    me = fake_api.user()
    second = login(fake_api, me)
    # Used just before: the token is in this process's token cache.
    assert fake_api.client.get("/api/auth/me", headers=me).status_code == 200
    reply = fake_api.client.post("/api/auth/logout", headers=me)
    assert reply.status_code == 204 and reply.content == b""
    gone = fake_api.client.get("/api/auth/me", headers=me)
    assert gone.status_code == 401 and gone.json()["code"] == "invalid_token"
    assert gone.headers["content-type"] == "application/problem+json"
    assert fake_api.client.post("/api/auth/logout", headers=me).status_code == 401
    assert fake_api.client.get("/api/auth/me", headers=second).status_code == 200
    assert ("auth.logout", "ok") in actions(fake_api, me["X-User-Id"])


def test_users_list_and_revoke_their_own_tokens(fake_api: Api) -> None:
    me = fake_api.user()
    second = login(fake_api, me)
    other = fake_api.user()
    listed = fake_api.client.get("/api/auth/tokens", headers=second)
    assert listed.status_code == 200, listed.text
    tokens = listed.json()["tokens"]
    assert len(tokens) == 2
    assert set(tokens[0]) == {"id", "name", "createdAt", "expiresAt", "current"}
    assert [t["current"] for t in tokens] == [True, False]  # newest first: the login
    assert all(t["expiresAt"] is not None for t in tokens)
    for secret in (me["Authorization"].split()[1], second["Authorization"].split()[1]):
        assert secret not in listed.text
    first_id = tokens[1]["id"]

    # Someone else's token, or an unknown one, does not exist for this user.
    for headers, token_id in ((other, first_id), (me, "unknown")):
        refused = fake_api.client.delete(f"/api/auth/tokens/{token_id}", headers=headers)
        assert refused.status_code == 404 and refused.json()["code"] == "token_not_found"
    assert fake_api.client.get("/api/auth/me", headers=me).status_code == 200

    assert fake_api.client.delete(f"/api/auth/tokens/{first_id}", headers=second).status_code == 204
    assert fake_api.client.get("/api/auth/me", headers=me).status_code == 401
    remaining = fake_api.client.get("/api/auth/tokens", headers=second).json()["tokens"]
    assert [t["id"] for t in remaining] == [tokens[0]["id"]]
    assert ("auth.token_revoke", "ok") in actions(fake_api, me["X-User-Id"])
    assert ("auth.token_revoke", "error:token_not_found") in actions(fake_api, other["X-User-Id"])


def test_admins_revoke_every_token_of_a_user(fake_api: Api) -> None:
    admin = fake_api.admin()
    me = fake_api.user()
    second = login(fake_api, me)
    bystander = fake_api.user()
    for headers in (me, second, bystander):
        assert fake_api.client.get("/api/auth/me", headers=headers).status_code == 200
    url = f"/api/admin/users/{me['X-User-Id']}/tokens"
    refused = fake_api.client.delete(url, headers=bystander)
    assert refused.status_code == 403 and refused.json()["code"] == "admin_required"
    reply = fake_api.client.delete(url, headers=admin)
    assert reply.status_code == 200 and reply.json() == {"revoked": 2}
    for headers in (me, second):
        assert fake_api.client.get("/api/auth/me", headers=headers).status_code == 401
    assert fake_api.client.get("/api/auth/me", headers=bystander).status_code == 200
    assert fake_api.client.delete(url, headers=admin).json() == {"revoked": 0}
    unknown = fake_api.client.delete("/api/admin/users/nobody/tokens", headers=admin)
    assert unknown.status_code == 404 and unknown.json()["code"] == "user_not_found"
    with fake_api.context.sessions() as session:
        audited = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "admin.tokens_revoke")
        ).all()
        assert {(e.target_user_id, e.result) for e in audited} >= {
            (me["X-User-Id"], "ok"),
            ("nobody", "error:user_not_found"),
        }
    # They can log in again.
    assert (
        fake_api.client.get("/api/auth/me", headers=login(fake_api, bystander)).status_code == 200
    )


def test_a_revoked_token_cannot_be_cached_again(fake_api: Api) -> None:
    """A lookup that read the row before the revocation does not put it back in the cache."""
    me = fake_api.user()
    cache = fake_api.services.tokens
    from clawhq.credentials import hash_token
    from clawhq.db.models import User

    digest = hash_token(me["Authorization"].split()[1])
    with fake_api.context.sessions() as session:
        user = session.get(User, me["X-User-Id"])
        cache.evict([digest])
        cache.put(digest, user, None)
    assert cache.get(digest) is None


def test_users_create_can_issue_an_expiring_token(tmp_path, monkeypatch, database_url) -> None:
    from clawhq.db.engine import create_db_engine
    from clawhq.services import users

    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("CLAWHQ_DATA_DIR", str(tmp_path))
    runner = CliRunner()
    result = runner.invoke(cli, ["users", "create", "expiring@example.com", "--expires-days", "7"])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[-1]
    never = runner.invoke(cli, ["users", "create", "forever@example.com"])
    assert never.exit_code == 0, never.output
    last = never.stdout.strip().splitlines()[-1]
    engine = create_db_engine(database_url)
    try:
        from sqlalchemy.orm import Session

        with Session(engine) as session:
            row = users.authenticate(session, token)
            assert row.expires_at is not None
            left = row.expires_at - datetime.now(UTC)
            assert timedelta(days=6, hours=23) < left <= timedelta(days=7)
            assert users.authenticate(session, last).expires_at is None
            assert session.scalar(select(ApiToken.name).where(ApiToken.id == row.id)) == "cli"
    finally:
        engine.dispose()
    refused = runner.invoke(cli, ["users", "create", "zero@example.com", "--expires-days", "0"])
    assert refused.exit_code == 2
