"""The dashboard's pure parts: form bodies, usage charts, how a status reads."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from clawhq.api.schemas_usage import UsageGroup
from clawhq.web import charts
from clawhq.web.admin import plan_totals
from clawhq.web.forms import FormError, agent_body, check_agent
from clawhq.web.live import parse, sse
from clawhq.web.operations import rollout_body


def test_the_agent_form_becomes_the_apis_json_body() -> None:
    form = {
        "name": ["n"],
        "modelProvider": ["openai"],
        "model": ["gpt-5"],
        "keySource": ["own"],
        "apiKey": ["sk-x-0123456789"],
        "channels": ["slack", "whatsapp"],
        "slack_bot_token": ["xoxb-0123456789"],
        "slack_app_token": ["xapp-0123456789"],
        "telegram_bot_token": ["not ticked: left out"],
    }
    assert agent_body(form) == {
        "name": "n",
        "modelProvider": "openai",
        "model": "gpt-5",
        "apiKey": "sk-x-0123456789",
        "channels": ["slack", "whatsapp"],
        "channelCredentials": {
            "slack": {"botToken": "xoxb-0123456789", "appToken": "xapp-0123456789"}
        },
    }
    bundled = agent_body({"name": ["n"], "keySource": ["bundled"], "apiKey": ["ignored"]})
    assert bundled["usesBundledApi"] is True and "apiKey" not in bundled


def test_a_model_wide_rule_is_named_as_the_api_names_it() -> None:
    with pytest.raises(FormError) as refused:
        check_agent({"name": ["n"]})
    assert refused.value.fields == {
        "body": "give apiKey, or set usesBundledApi to true where your plan allows it"
    }
    assert refused.value.summary.startswith("invalid request: body: give apiKey")


def test_a_daily_chart_has_every_day_and_scales_to_the_busiest() -> None:
    start = datetime(2026, 12, 1, tzinfo=UTC)
    end = datetime(2026, 12, 4, 12, tzinfo=UTC)
    groups = [
        UsageGroup(key="2026-12-02", requests=1, input_tokens=0, output_tokens=0,
                   cache_read_tokens=0, cache_write_tokens=0, total_tokens=50),
        UsageGroup(key="2026-12-04", requests=2, input_tokens=0, output_tokens=0,
                   cache_read_tokens=0, cache_write_tokens=0, total_tokens=100),
    ]  # fmt: skip
    chart = charts.daily(groups, start, end)
    assert [b.day for b in chart.bars] == ["2026-12-01", "2026-12-02", "2026-12-03", "2026-12-04"]
    assert [b.tokens for b in chart.bars] == [0, 50, 0, 100]
    assert chart.peak == 100 and chart.total == 150
    tallest = chart.bars[3]
    assert tallest.height == pytest.approx(2 * chart.bars[1].height)
    assert tallest.y + tallest.height == chart.height - chart.bottom
    assert charts.daily([], start, end).peak == 0  # no division by zero


def test_the_budget_meter() -> None:
    assert charts.budget(10, None).percent is None
    assert charts.budget(250, 1000).percent == 25
    over = charts.budget(1200, 1000)
    assert over.percent == 100 and over.over
    assert charts.budget(0, 0).over


def test_sse_messages_carry_multi_line_html() -> None:
    message = sse("status", "<p>a</p>\n<p>b</p>")
    assert message == "event: status\ndata: <p>a</p>\ndata: <p>b</p>\n\n"
    assert parse('event: progress\ndata: {"progress": 50}\n\n') == ("progress", {"progress": 50})


def test_a_rollout_form_chooses_one_selector() -> None:
    assert rollout_body({"selector": ["all"]}) == {"maxUnavailable": 1, "maxFailures": 1,
                                                   "all": True}  # fmt: skip
    chosen = rollout_body({"selector": ["agents"], "agents": ["a, b c"], "image": [" img:1 "]})
    assert chosen["agents"] == ["a", "b", "c"] and chosen["image"] == "img:1"


def test_usage_per_plan_adds_up_its_users() -> None:
    def group(key: str, tokens: int) -> UsageGroup:
        zero = dict.fromkeys(("input_tokens", "output_tokens", "cache_read_tokens"), 0)
        return UsageGroup(key=key, requests=1, cache_write_tokens=0, total_tokens=tokens, **zero)

    rows = plan_totals([group("u1", 5), group("u2", 7), group("u3", 1)], {"u1": "pro", "u2": "pro"})
    assert rows == [("pro", 2, 12), ("(deleted user)", 1, 1)]
