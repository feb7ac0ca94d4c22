"""The dashboard in a real browser (Debian's headless Chromium, driven by Playwright) against a
real `clawhq serve` over the real Docker Engine and the busybox test agent: a new user signs
up, is told the API's own message for a bad key, fixes it, deploys and watches the progress
bar reach RUNNING, reads and follows the logs, stops and deletes; a second user sees none of
it; an admin sees both users, the agent and the audit entries. Screenshots of the main pages,
at a desktop's and a phone's width, go to test-artifacts/ (CLAWHQ_TEST_ARTIFACTS)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import clean_database
from tests.integration.served import Served, cli, serve_env
from tests.integration.test_agent_access import ARTIFACTS, chromium

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]
PASSWORD = "correct horse battery"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
#: Playwright's launch arguments for Debian's chromium (no browser download is possible).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT_MS = 60_000


@dataclass
class Site:
    served: Served
    admin_email: str
    shots: Path
    #: Console messages about the Content-Security-Policy, and uncaught page errors.
    problems: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return self.served.base


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory, sqlite_url: str, docker_runtime: Any, test_image: str
) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("dashboard")
    with clean_database(sqlite_url) as url:
        env = serve_env(tmp / "data", url, port_range="19600-19649", start_timeout="60")
        served = Served(env, tmp / "serve.log").start()
        try:
            admin = f"ops{uuid.uuid4().hex[:8]}@example.com"
            made = cli(env, "users", "create", admin, "--password", PASSWORD, "--admin")
            assert made.returncode == 0, made.stderr
            shots = ARTIFACTS / "dashboard"
            shots.mkdir(parents=True, exist_ok=True)
            yield Site(served, admin, shots)
        finally:
            served.stop()
            from tests.conftest import remove_user_containers

            engine_ids = _user_ids(url)
            remove_user_containers(docker_runtime, engine_ids)


def _user_ids(url: str) -> list[str]:
    from sqlalchemy import text

    from clawhq.db.engine import create_db_engine

    engine = create_db_engine(url)
    with engine.connect() as conn:
        ids = [row[0] for row in conn.execute(text("SELECT id FROM users"))]
    engine.dispose()
    return ids


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def open_page(site: Site, browser: Any) -> Any:
    """A page in a context of its own (its own cookies), watched for CSP reports and errors."""
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.on(
        "console",
        lambda m: site.problems.append(m.text) if "Content Security Policy" in m.text else None,
    )
    page.on("pageerror", lambda error: site.problems.append(f"page error: {error}"))
    page.on("dialog", lambda dialog: dialog.accept())  # "Stop …?" confirmations
    return page


def shoot(site: Site, page: Any, name: str) -> None:
    """The page at a desktop's width and at a phone's (full length)."""
    page.screenshot(path=str(site.shots / f"{name}-desktop.png"), full_page=True)
    page.set_viewport_size(PHONE)
    page.screenshot(path=str(site.shots / f"{name}-phone.png"), full_page=True)
    page.set_viewport_size(DESKTOP)


def sign_up(site: Site, page: Any, email: str) -> None:
    page.goto(site.base + "/")
    page.get_by_role("link", name="Create an account").click()
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=False).first.fill(PASSWORD)
    page.get_by_label("The same password again").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    page.get_by_role("heading", name="Your agents").wait_for()


def sign_in(site: Site, page: Any, email: str) -> None:
    page.goto(site.base + "/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Your agents").wait_for()


def api_message_for(site: Site, body: dict[str, Any]) -> str:
    """What ``POST /api/agents`` answers ``body`` with, asked by a user of its own."""
    with httpx.Client(base_url=site.base, timeout=30) as http:
        email = f"probe{uuid.uuid4().hex[:8]}@example.com"
        reply = http.post("/api/auth/register", json={"email": email, "password": PASSWORD})
        token = {"Authorization": f"Bearer {reply.json()['token']}"}
        refused = http.post("/api/agents", json=body, headers=token)
        assert refused.status_code == 422, refused.text
        return str(refused.json()["detail"])


def test_a_new_user_runs_an_agent_from_the_browser_and_only_they_and_an_admin_see_it(
    site: Site, browser: Any
) -> None:
    owner = f"owner{uuid.uuid4().hex[:8]}@example.com"
    page = open_page(site, browser)
    page.goto(site.base + "/")
    page.get_by_role("heading", name="Sign in to ClawHQ").wait_for()
    shoot(site, page, "signin")
    sign_up(site, page, owner)
    shoot(site, page, "agents-empty")

    # A key with a space in it: the form says what the API says, word for word.
    page.get_by_role("link", name="New agent").click()
    page.get_by_label("Name", exact=True).fill("helper")
    page.get_by_label("Your key").fill("sk-not a key")
    page.get_by_role("button", name="Create agent").click()
    expected = api_message_for(site, {"name": "helper", "apiKey": "sk-not a key"})
    alert = page.get_by_role("alert")
    alert.wait_for()
    assert alert.inner_text().strip() == expected
    assert "sk-not a key" not in page.content()  # a secret is never rendered back
    shoot(site, page, "agent-new-error")

    page.get_by_label("Your key").fill("sk-test-0123456789abcdef")
    page.get_by_role("button", name="Create agent").click()
    page.get_by_role("heading", name="helper").wait_for()
    agent_id = page.url.rstrip("/").rsplit("/", 1)[-1]
    assert "sk-test-0123456789abcdef" not in page.content()
    assert page.locator("#agent-status dd", has_text="set").count() >= 1  # the key: "set"

    # Deploy: the progress bar, fed by the deploy's progress stream, reaches RUNNING.
    page.get_by_role("button", name="Deploy").click()
    page.locator('progress#deploy-bar[value="100"]').wait_for()
    page.locator('[data-settled="RUNNING"]').wait_for()
    page.locator('#agent-status [data-status="RUNNING"]').wait_for()  # the live status card
    page.get_by_role("button", name="Reload", exact=True).click()  # the panels, now it runs
    page.locator("#log-tail li", has_text="starting in mode healthy").wait_for()
    page.get_by_role("button", name="Measure again").click()
    page.locator("#stats dt", has_text="Memory").wait_for()
    shoot(site, page, "agent-running")

    # The chat pane talks to the agent's chat API; the busybox stand-in has no chat endpoint,
    # so what comes back is ClawHQ's account of its answer, in words.
    page.get_by_label("Message").fill("hello")
    page.get_by_role("button", name="Send").click()
    page.locator(".chat-log li").nth(1).wait_for()
    assert page.locator(".chat-log li").first.inner_text() == "You: hello"

    # Another tab follows the logs; this one stops the agent (after its confirmation dialog):
    # the agent's last words, then the end, arrive through the follow stream.
    watcher = page.context.new_page()
    watcher.set_default_timeout(WAIT_MS)
    watcher.goto(f"{site.base}/ui/agents/{agent_id}")
    watcher.get_by_role("button", name="Follow", exact=True).click()
    watcher.locator('#log-follow [data-connected="true"]').wait_for(state="attached")
    page.get_by_role("button", name="Stop", exact=True).click()
    page.locator('#agent-status [data-status="STOPPED"]').wait_for()
    watcher.locator("#log-follow li", has_text="test agent: stopping").wait_for()
    watcher.locator("#log-follow li.log-end", has_text="the container stopped").wait_for()
    watcher.close()

    # The agent list shows it live; the status reads as the API's.
    page.goto(site.base + "/")
    row = page.locator(f"#agent-{agent_id}")
    row.locator('[data-status="STOPPED"]').wait_for()
    assert "helper" in row.inner_text()
    shoot(site, page, "agents")
    for name, path in (("usage", "/ui/usage"), ("tokens", "/ui/tokens")):
        page.goto(site.base + path)
        shoot(site, page, name)

    # A second user sees none of it, not even by its address.
    other = open_page(site, browser)
    sign_up(site, other, f"other{uuid.uuid4().hex[:8]}@example.com")
    assert other.locator(f"#agent-{agent_id}").count() == 0
    assert "No agents yet" in other.locator("#agent-rows").inner_text()
    missing = other.goto(f"{site.base}/ui/agents/{agent_id}")
    assert missing is not None and missing.status == 404
    assert f"agent {agent_id} not found" in other.get_by_role("alert").inner_text()
    assert "Traceback" not in other.content()

    # The admin: both users, the agent with its owner, and what happened to it in the audit log.
    admin = open_page(site, browser)
    sign_in(site, admin, site.admin_email)
    admin.get_by_role("link", name="Users", exact=True).click()
    admin.get_by_role("heading", name="Users").wait_for()
    users_text = admin.locator("main").inner_text()
    assert owner in users_text and "other" in users_text
    shoot(site, admin, "admin-users")
    admin.get_by_role("link", name="All agents").click()
    admin.locator(f"#agent-{agent_id}").wait_for()
    assert owner in admin.locator(f"#agent-{agent_id}").inner_text()
    shoot(site, admin, "admin-agents")
    admin.get_by_role("link", name="Operations").click()
    admin.get_by_role("heading", name="Port pool").wait_for()
    shoot(site, admin, "admin-overview")
    for name in ("plans", "rollouts", "usage"):
        admin.goto(f"{site.base}/ui/admin/{name}")
        shoot(site, admin, f"admin-{name}")
    admin.goto(f"{site.base}/ui/admin/audit?agentId={agent_id}")
    audit_text = admin.locator("table").inner_text()
    for action in ("agent.create", "agent.deploy", "agent.stop"):
        assert action in audit_text, audit_text
    shoot(site, admin, "admin-audit")

    # Delete, asked twice (and the workspace with it); the list is empty again.
    page.goto(f"{site.base}/ui/agents/{agent_id}")
    page.get_by_role("link", name="Delete…").click()
    page.get_by_label("Delete it too").check()
    page.get_by_role("button", name="Delete helper").click()
    page.get_by_role("heading", name="Your agents").wait_for()
    page.locator("#agent-rows", has_text="No agents yet").wait_for()
    admin.reload()
    assert "agent.delete" in admin.locator("table").inner_text()

    # Signing out ends the session: the pages need a new sign-in.
    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("heading", name="Sign in to ClawHQ").wait_for()
    page.goto(f"{site.base}/ui/tokens")
    assert "/?next=/ui/tokens" in page.url
    assert not site.problems, site.problems


@pytest.mark.parametrize(
    "sneaky",
    ["/%09/{host}/", "/%0a/{host}/", "/\\{host}/", "https:{host}/", " //{host}/"],
    ids=["tab", "newline", "backslash", "scheme-relative", "leading-space"],
)
def test_after_sign_in_the_browser_stays_on_clawhqs_origin(
    site: Site, browser: Any, sneaky: str
) -> None:
    """``next`` is judged as a browser reads it: none of these, which a check of the string's
    first characters lets through, takes Chromium off ClawHQ's origin after signing in."""
    from urllib.parse import quote

    from tests.integration.outside import HostListener

    elsewhere = HostListener("127.0.0.1")  # "evil.example": a listener the test owns
    try:
        target = sneaky.format(host=f"127.0.0.1:{elsewhere.port}")
        page = open_page(site, browser)
        page.goto(f"{site.base}/?next={quote(target, safe='')}")
        page.get_by_label("Email").fill(site.admin_email)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_load_state()
        assert page.url.startswith(site.base + "/"), page.url
        assert elsewhere.hits == 0
        page.context.close()
    finally:
        elsewhere.close()
