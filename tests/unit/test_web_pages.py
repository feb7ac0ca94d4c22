"""The dashboard's pages over the in-memory runtime: sessions and CSRF, the API's own messages,
nothing secret rendered, errors as human messages, CSP and cache headers."""

from __future__ import annotations

import html
import re
import uuid
from typing import Any

import pytest

from clawhq.db.models import Agent
from clawhq.status import AgentStatus
from clawhq.web import assets
from clawhq.web.render import CSP
from tests.conftest import Api

PASSWORD = "correct horse battery"


class Browser:
    """The test client as a browser: its cookies, and the Origin its forms send."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.client = api.client
        self.origin = {"Origin": api.context.settings.public_origin}

    def post(self, path: str, follow: bool = False, **form: str) -> Any:
        return self.client.post(path, data=form, headers=self.origin, follow_redirects=follow)

    def sign_up(self, email: str | None = None) -> str:
        email = email or f"w{uuid.uuid4().hex[:10]}@example.com"
        self.client.cookies.clear()
        reply = self.post("/ui/signup", email=email, password=PASSWORD, password2=PASSWORD)
        assert reply.status_code == 303, reply.text
        assert reply.headers["location"] == "/"
        return email

    def new_agent(self, **form: str) -> str:
        fields = {"name": f"a{uuid.uuid4().hex[:6]}", "keySource": "own"}
        fields.setdefault("apiKey", "sk-test-0123456789")
        reply = self.post("/ui/agents", **{**fields, **form})
        assert reply.status_code == 303, reply.text
        return str(reply.headers["location"]).rsplit("/", 1)[-1]


@pytest.fixture
def browser(fake_api: Api) -> Browser:
    return Browser(fake_api)


def alerts(page: str) -> list[str]:
    """The error messages a page shows, as the reader reads them."""
    return [html.unescape(m) for m in re.findall(r'class="alert" role="alert">([^<]*)<', page)]


def test_the_sign_in_page_is_at_the_root_with_a_strict_policy(browser: Browser) -> None:
    page = browser.client.get("/")
    assert page.status_code == 200
    assert "Sign in to ClawHQ" in page.text
    assert page.headers["content-security-policy"] == CSP
    assert "script-src 'self';" in CSP and "'unsafe-inline'" not in CSP
    assert "frame-ancestors 'none'" in CSP and "form-action 'self'" in CSP
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["x-frame-options"] == "DENY"
    # No inline script or style anywhere: only files, from here.
    assert not re.search(r"<script(?![^>]*\ssrc=)", page.text)
    assert "<style" not in page.text and " style=" not in page.text
    assert '"allowEval":false' in page.text and '"includeIndicatorStyles":false' in page.text


def test_static_files_are_served_by_digest_and_kept_for_a_year(browser: Browser) -> None:
    for name in ("vendor/htmx.min.js", "vendor/htmx-ext-sse.min.js", "app.js", "app.css"):
        reply = browser.client.get(assets.url(name))
        assert reply.status_code == 200, name
        assert reply.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert reply.headers["x-content-type-options"] == "nosniff"
    old = browser.client.get("/ui/static/0123abcd/app.css")
    assert old.status_code == 200 and old.headers["cache-control"] == "no-cache"
    missing = browser.client.get("/ui/static/0123abcd/nothing.js")
    assert missing.status_code == 404 and "no such file" in missing.text


def test_signing_up_gives_a_browser_session_and_no_leftover_token(browser: Browser) -> None:
    email = browser.sign_up()
    home = browser.client.get("/")
    assert "Your agents" in home.text and email in home.text
    tokens = browser.client.get("/ui/tokens").text
    assert tokens.count('data-label="Name">browser session') == 1
    assert 'data-label="Name">login' not in tokens
    out = browser.post("/ui/signout")
    assert out.status_code == 303
    assert "Sign in to ClawHQ" in browser.client.get("/").text


def test_a_wrong_password_says_so_and_another_site_cannot_sign_anyone_in(browser: Browser) -> None:
    email = browser.sign_up()
    browser.client.cookies.clear()
    wrong = browser.post("/ui/signin", email=email, password="not the password")
    assert wrong.status_code == 401
    assert alerts(wrong.text) == ["wrong email or password"]
    assert email in wrong.text  # the address is kept in the form; the password is not
    elsewhere = browser.client.post(
        "/ui/signin",
        data={"email": email, "password": PASSWORD},
        headers={"Origin": "https://evil.example"},
    )
    assert elsewhere.status_code == 403 and "clawhq_session" not in elsewhere.headers.get(
        "set-cookie", ""
    )
    right = browser.post("/ui/signin", email=email, password=PASSWORD, next="/ui/tokens")
    assert right.status_code == 303 and right.headers["location"] == "/ui/tokens"
    away = browser.post("/ui/signin", email=email, password=PASSWORD, next="//evil.example/")
    assert away.headers["location"] == "/"
    # An agent lives on its own origin, and a browser holds the redirects after a form post to
    # the page's form-action 'self': a page of ClawHQ's navigates there instead.
    agent = browser.post("/ui/signin", email=email, password=PASSWORD, next="/agents/abc/")
    assert agent.status_code == 200 and "location" not in agent.headers
    assert '<meta http-equiv="refresh" content="0;url=/agents/abc/">' in agent.text
    assert "clawhq_session" in agent.headers.get("set-cookie", "")


def test_signed_out_browsers_go_to_the_sign_in_page_and_htmx_is_told_to(browser: Browser) -> None:
    page = browser.client.get("/ui/tokens", headers={"Accept": "text/html"}, follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/?next=/ui/tokens"
    panel = browser.client.get(
        "/ui/agents/x/stats",
        headers={"HX-Request": "true", "HX-Current-URL": "http://testserver/ui/agents/x"},
    )
    assert panel.status_code == 401
    assert panel.headers["hx-redirect"] == "/?next=/ui/agents/x"
    legacy = browser.client.get("/login?next=/agents/abc/", follow_redirects=False)
    assert legacy.headers["location"] == "/?next=/agents/abc/"


def test_a_cookie_form_needs_the_pages_origin_or_the_csrf_header(browser: Browser) -> None:
    browser.sign_up()
    bare = browser.client.post("/ui/agents", data={"name": "x", "apiKey": "sk-test-0123456789"})
    assert bare.status_code == 403 and "must come from ClawHQ's own pages" in alerts(bare.text)[0]
    csrf = browser.client.cookies["clawhq_csrf"]
    page = browser.client.get("/ui/agents/new").text
    assert f'<meta name="clawhq-csrf" content="{csrf}">' in page
    with_header = browser.client.post(
        "/ui/agents",
        data={"name": "x", "apiKey": "sk-test-0123456789"},
        headers={"X-CSRF-Token": csrf},
        follow_redirects=False,
    )
    assert with_header.status_code == 303


BAD_AGENTS = [
    ({"name": "k", "apiKey": "short"}, {"name": "k", "keySource": "own", "apiKey": "short"}),
    ({"name": "k", "apiKey": "sk-with space"}, {"name": "k", "apiKey": "sk-with space"}),
    ({"name": "k"}, {"name": "k", "keySource": "own"}),
    ({"name": "   ", "apiKey": "sk-test-0123456789"}, {"name": "   "}),
    (
        {"name": "k", "apiKey": "sk-test-0123456789", "channels": ["telegram"]},
        {"name": "k", "channels": "telegram"},
    ),
    (
        {
            "name": "k",
            "apiKey": "sk-test-0123456789",
            "channels": ["telegram"],
            "channelCredentials": {"telegram": {"botToken": "nope"}},
        },
        {"name": "k", "channels": "telegram", "telegram_bot_token": "nope"},
    ),
]


@pytest.mark.parametrize(("json_body", "form"), BAD_AGENTS)
def test_the_agent_form_says_what_the_api_says(
    browser: Browser, json_body: dict[str, Any], form: dict[str, str]
) -> None:
    token = browser.api.user(plan="pro")
    api = browser.client.post("/api/agents", json=json_body, headers=token)
    assert api.status_code == 422
    browser.sign_up()
    form = {"apiKey": "sk-test-0123456789", **form} if "apiKey" in json_body else form
    page = browser.post("/ui/agents", **form)
    assert page.status_code == 422
    assert alerts(page.text) == [api.json()["detail"]]
    for secret in ("sk-with space", "short", "nope"):
        assert f'value="{secret}"' not in page.text


def test_plan_refusals_are_the_apis_messages(browser: Browser) -> None:
    browser.sign_up()  # the free plan: one agent, no bundled keys
    refused = browser.post("/ui/agents", name="b", keySource="bundled")
    assert refused.status_code == 403
    assert "does not include ClawHQ's bundled API keys" in alerts(refused.text)[0]
    browser.new_agent()
    over = browser.post("/ui/agents", name="second", apiKey="sk-test-0123456789")
    assert over.status_code == 403 and "allows 1 agent(s)" in alerts(over.text)[0]


def test_secrets_show_as_set_and_never_come_back(browser: Browser) -> None:
    browser.api.context.sessions  # noqa: B018 - the app is up
    browser.sign_up()
    telegram = "123456789:" + "A" * 35
    agent_id = browser.new_agent(
        apiKey="sk-planted-0123456789", channels="telegram", telegram_bot_token=telegram
    )
    page = browser.client.get(f"/ui/agents/{agent_id}").text
    assert "sk-planted-0123456789" not in page and telegram not in page
    assert "<dt>API key</dt><dd>set</dd>" in page
    assert "telegram (credentials set)" in page


def test_deploy_stop_delete_and_the_panels(browser: Browser) -> None:
    browser.sign_up()
    agent_id = browser.new_agent()
    deployed = browser.post(f"/ui/agents/{agent_id}/deploy")
    assert deployed.headers["location"] == f"/ui/agents/{agent_id}?watch=true"
    page = browser.client.get(deployed.headers["location"]).text
    assert f'sse-connect="/ui/agents/{agent_id}/progress"' in page
    assert f'data-api="/api/agents/{agent_id}/v1/chat/completions"' in page  # the chat pane
    for panel in ("logs", "stats", "events", "usage"):
        reply = browser.client.get(f"/ui/agents/{agent_id}/{panel}", headers={"HX-Request": "true"})
        assert reply.status_code == 200, (panel, reply.text)
    stopped = browser.post(f"/ui/agents/{agent_id}/stop", follow=True)
    assert 'data-status="STOPPED"' in stopped.text
    stats = browser.client.get(f"/ui/agents/{agent_id}/stats", headers={"HX-Request": "true"})
    assert stats.status_code == 409 and alerts(stats.text) == ["the agent is not running"]
    assert stats.headers["hx-reswap"] == "innerHTML"
    asked = browser.client.get(f"/ui/agents/{agent_id}/delete")
    assert "Delete it too" in asked.text
    gone = browser.post(f"/ui/agents/{agent_id}/delete", workspace="delete", follow=True)
    assert "No agents yet" in gone.text


def test_why_an_agent_is_down_reads_in_plain_words(browser: Browser) -> None:
    browser.sign_up()
    agent_id = browser.new_agent()
    with browser.api.context.sessions() as session:
        agent = session.get(Agent, agent_id)
        agent.status = AgentStatus.RESTARTING
        agent.oom_killed = True
        agent.restart_count = 3
        agent.last_error = "the agent ran out of memory and was killed (exit code 137)"
        session.commit()
    home = browser.client.get("/").text
    row = home[home.index(f'id="agent-{agent_id}"') :]
    assert "Out of memory" in row and "ran out of memory and was killed (exit code 137)" in row
    assert '<td data-label="Restarts">3</td>' in row


def test_an_unexpected_error_is_a_message_not_a_stack_trace(
    browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clawhq.api.routes import auth

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a secret detail of the failure")

    browser.sign_up()
    monkeypatch.setattr(auth, "list_tokens", broken)
    page = browser.client.get("/ui/tokens")
    assert page.status_code == 500
    assert alerts(page.text) == ["internal error; it has been logged"]
    assert "secret detail" not in page.text and "Traceback" not in page.text


def test_a_token_is_made_with_the_password_and_shown_once(browser: Browser) -> None:
    browser.sign_up()
    wrong = browser.post("/ui/tokens", password="not it at all")
    assert wrong.status_code == 401 and alerts(wrong.text) == ["wrong email or password"]
    made = browser.post("/ui/tokens", password=PASSWORD)
    assert made.status_code == 201
    token = re.search(r'id="new-token">([^<]+)<', made.text)
    assert token is not None
    assert browser.client.get(
        "/api/auth/me", headers={"Authorization": f"Bearer {token.group(1)}"}
    ).is_success
    listed = browser.client.get("/ui/tokens").text
    assert token.group(1) not in listed
    ids = re.findall(r'action="/ui/tokens/([^/]+)/revoke"', listed)
    assert len(ids) == 2
    browser.post(f"/ui/tokens/{ids[0]}/revoke")  # the newest: the API token
    assert not browser.client.get(
        "/api/auth/me", headers={"Authorization": f"Bearer {token.group(1)}"}
    ).is_success


def test_an_agents_history_begins_stopped(browser: Browser) -> None:
    """The ``created`` entry's status is the agent's first one (it was the text "None")."""
    headers = browser.api.user(plan="pro")
    agent = browser.api.agent(headers)
    events = browser.client.get(f"/api/agents/{agent['id']}/events", headers=headers).json()
    assert [(e["kind"], e["status"]) for e in events["events"]] == [("created", "STOPPED")]
