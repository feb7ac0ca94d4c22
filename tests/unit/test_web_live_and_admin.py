"""The dashboard's live parts (Server-Sent Events of HTML) and the operators' pages, over the
in-memory runtime."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from clawhq.db.models import AuditEvent, Plan
from clawhq.settings import Settings
from tests.conftest import Api
from tests.unit.test_web_pages import PASSWORD, Browser, alerts


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """Streams that do not end by themselves end within two seconds here."""
    return make_settings(stream_max_seconds=2)


@pytest.fixture
def browser(fake_api: Api) -> Browser:
    return Browser(fake_api)


def events_of(browser: Browser, path: str) -> list[tuple[str, str]]:
    """Every (event, data) of a stream, read to its end."""
    found: list[tuple[str, str]] = []
    with browser.client.stream("GET", path) as reply:
        assert reply.status_code == 200, reply.read()
        assert reply.headers["content-type"].startswith("text/event-stream")
        event, data = "message", []
        for line in reply.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
            elif not line and data:
                found.append((event, "\n".join(data)))
                event, data = "message", []
    return found


def test_the_agent_list_streams_its_rows_as_html(browser: Browser) -> None:
    browser.sign_up()
    agent_id = browser.new_agent(name="<b>bold</b>")
    found = events_of(browser, "/ui/live/agents")
    assert found and found[0][0] == "agents"
    rows = found[0][1]
    assert f'id="agent-{agent_id}"' in rows and 'data-status="STOPPED"' in rows
    assert "&lt;b&gt;bold&lt;/b&gt;" in rows and "<b>" not in rows  # escaped


def test_the_progress_bar_follows_the_deploy_to_running(browser: Browser) -> None:
    browser.sign_up()
    agent_id = browser.new_agent()
    browser.post(f"/ui/agents/{agent_id}/deploy")
    found = events_of(browser, f"/ui/agents/{agent_id}/progress")
    bars = [re.search(r'value="(\d+)"', data) for event, data in found if event == "progress"]
    values = [int(m.group(1)) for m in bars if m]
    assert values == sorted(values) and values[-1] == 100
    assert found[-1][0] == "end" and 'data-settled="RUNNING"' in found[-1][1]


def test_one_agents_status_streams_and_someone_elses_is_not_found(browser: Browser) -> None:
    browser.sign_up()
    agent_id = browser.new_agent()
    found = events_of(browser, f"/ui/live/agents/{agent_id}")
    assert found[0][0] == "status" and 'id="agent-status"' in found[0][1]
    browser.sign_up()
    stranger = browser.client.get(f"/ui/live/agents/{agent_id}")
    assert stranger.status_code == 404 and f"agent {agent_id} not found" in stranger.text


def admin_browser(browser: Browser) -> str:
    email = browser.sign_up()
    from clawhq.db.models import User

    with browser.api.context.sessions() as session:
        user = session.query(User).filter_by(email=email).one()
        user.is_admin = True
        session.commit()
    return email


def audit_actions(api: Api) -> list[str]:
    with api.context.sessions() as session:
        return [e.action for e in session.query(AuditEvent).order_by(AuditEvent.id)]


def test_only_admins_reach_the_operators_pages(browser: Browser) -> None:
    browser.sign_up()
    refused = browser.client.get("/ui/admin/users")
    assert refused.status_code == 403 and alerts(refused.text) == ["this needs an admin account"]


def test_admins_see_users_change_plans_and_start_and_stop_everything(browser: Browser) -> None:
    owner = browser.sign_up()
    agent_id = browser.new_agent()
    admin_browser(browser)
    users = browser.client.get("/ui/admin/users").text
    owner_id = re.search(rf'id="user-([^"]+)">\s*<td data-label="Email">{owner}', users)
    assert owner_id is not None, users
    uid = owner_id.group(1)
    assert browser.post(f"/ui/admin/users/{uid}/plan", plan="pro").status_code == 303
    bad = browser.post(f"/ui/admin/users/{uid}/plan", plan="gold")
    assert bad.status_code == 400 and "unknown plan 'gold'" in alerts(bad.text)[0]
    assert browser.post(f"/ui/admin/users/{uid}/start-all").status_code == 303
    listed = browser.client.get(f"/ui/admin/agents?userId={uid}").text
    assert f'id="agent-{agent_id}"' in listed, listed
    assert re.search(r'data-status="(DEPLOYING|RUNNING)"', listed)  # as the API's start answers
    assert owner in listed
    assert browser.post(f"/ui/admin/users/{uid}/stop-all").status_code == 303
    assert browser.post(f"/ui/admin/agents/{agent_id}/start").status_code == 303
    assert browser.post(f"/ui/admin/agents/{agent_id}/stop").status_code == 303
    assert browser.post(f"/ui/admin/users/{uid}/tokens/revoke").status_code == 303
    actions = audit_actions(browser.api)
    for action in ("admin.plan_change", "admin.agent_start", "admin.agent_stop"):
        assert action in actions
    assert "admin.tokens_revoke" in actions


def test_the_audit_log_filters_and_says_what_is_wrong_with_a_filter(browser: Browser) -> None:
    admin_browser(browser)
    page = browser.client.get("/ui/admin/audit?action=auth.")
    assert page.status_code == 200 and "auth.register" in page.text
    bad = browser.client.get("/ui/admin/audit?since=yesterday")
    assert bad.status_code == 400
    assert alerts(bad.text) == ["since: not an RFC 3339 time: yesterday"]


def test_plans_are_set_with_the_apis_rules(browser: Browser) -> None:
    admin_browser(browser)
    assert "allowlist" in browser.client.get("/ui/admin/plans").text
    saved = browser.post(
        "/ui/admin/plans/pro/llm", monthlyTokenBudget="1,000,000", llmRequestsPerMinute="30"
    )
    assert saved.status_code == 303
    typo = browser.post("/ui/admin/plans/pro/llm", monthlyTokenBudget="lots")
    assert typo.status_code == 422 and alerts(typo.text)[0].startswith("pro: invalid request:")
    assert browser.post("/ui/admin/plans/pro/disk", agentDisk="4g").status_code == 303
    small = browser.post("/ui/admin/plans/pro/disk", agentDisk="1m")
    assert alerts(small.text) == ["pro: invalid request: agentDisk: must be at least 16m"]
    assert browser.post("/ui/admin/plans/pro/egress", policy="none").status_code == 303
    nope = browser.post("/ui/admin/plans/pro/image", image="nope:1")
    assert alerts(nope.text) == ["pro: image nope:1 is not on the container engine"]
    with browser.api.context.sessions() as session:
        plan: Any = session.get(Plan, "pro")
        assert plan.monthly_token_budget == 1_000_000 and plan.llm_requests_per_minute == 30
        assert plan.agent_disk == 4 * 1024**3 and plan.egress_policy == "none"


def test_rollouts_start_follow_and_abort(browser: Browser) -> None:
    browser.sign_up()
    agent_id = browser.new_agent()
    browser.post(f"/ui/agents/{agent_id}/deploy")
    admin_browser(browser)
    empty = browser.post("/ui/admin/rollouts", selector="agents", agents="")
    assert empty.status_code == 422 and "agents" in alerts(empty.text)[0]
    started = browser.post("/ui/admin/rollouts", selector="agents", agents=agent_id)
    assert started.status_code == 303
    page = browser.client.get("/ui/admin/rollouts").text
    rollout_id = re.search(r'id="rollout-([^"]+)-title"', page)  # it may have finished already
    assert rollout_id is not None
    rid = rollout_id.group(1)
    found = events_of(browser, f"/ui/admin/rollouts/{rid}/live")
    assert found and found[0][0] == "progress" and "<progress" in found[0][1]
    browser.post(f"/ui/admin/rollouts/{rid}/abort")
    again = browser.post(f"/ui/admin/rollouts/{rid}/pause")
    assert again.status_code == 409
    assert "rollout.start" in audit_actions(browser.api)


def test_admins_see_capacity_and_usage_per_plan(browser: Browser) -> None:
    admin_browser(browser)
    overview = browser.client.get("/ui/admin").text
    ports = browser.api.context.settings.port_count
    assert f"0 of {ports} ports in use" in overview
    usage = browser.client.get("/ui/admin/usage")
    assert usage.status_code == 200 and "Per plan" in usage.text


def test_a_signed_in_user_is_sent_on_to_next(browser: Browser) -> None:
    browser.sign_up()
    reply = browser.client.get("/?next=/ui/usage", follow_redirects=False)
    assert reply.status_code == 303 and reply.headers["location"] == "/ui/usage"
    assert PASSWORD not in browser.client.get("/ui/usage").text
