"""Operators' graphs and alerts (monitoring/): Prometheus rules that promtool accepts and whose
unit tests pass, and a Grafana dashboard; every metric either names is one ClawHQ exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Api, unavailable

MONITORING = Path(__file__).resolve().parents[2] / "monitoring"
RULES = MONITORING / "prometheus-rules.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
#: What the issue asks the rules to watch, by alert name.
REQUIRED_ALERTS = {
    "ClawHQAgentsCrashLooping",
    "ClawHQDeploysFailing",
    "ClawHQPortPoolNearlyEmpty",
    "ClawHQModelCallsRefused",
    "ClawHQEngineUnreachable",
}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        unavailable("promtool", "Debian's prometheus package is not installed")
    return str(found)


def test_promtool_accepts_the_rules() -> None:
    checked = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_rules_fire_on_their_unit_tests() -> None:
    tested = subprocess.run(
        [promtool(), "test", "rules", "prometheus-rules.test.yml"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=MONITORING,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def rule_expressions() -> tuple[set[str], list[str]]:
    """The alerts' names and expressions (PyYAML comes with schemathesis, a dev dependency)."""
    import yaml

    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    return {r["alert"] for r in rules}, [str(r["expr"]) for r in rules]


def dashboard_expressions() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    return [t["expr"] for p in board["panels"] for t in p["targets"]]


def metric_names(expr: str) -> set[str]:
    """The ClawHQ metric names an expression reads (not its label values or legends)."""
    bare = re.sub(r'"[^"]*"', '""', expr)
    return set(re.findall(r"\bclawhq_[a-z0-9_]+\b", bare))


def exported(api: Api) -> set[str]:
    """Every sample name ClawHQ's registry exports, whether or not it has samples yet."""
    names: set[str] = set()
    for family in api.context.metrics.registry.collect():
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_count", "_sum", "_created"),
            "gauge": ("",),
        }[family.type]
        names |= {family.name + suffix for suffix in suffixes}
        names |= {sample.name for sample in family.samples}
    return names


def test_the_rules_cover_what_operators_are_woken_for() -> None:
    alerts, _ = rule_expressions()
    assert alerts >= REQUIRED_ALERTS


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_every_metric_named_is_one_clawhq_exports(fake_api: Api, source: str) -> None:
    exprs = rule_expressions()[1] if source == "rules" else dashboard_expressions()
    named = set().union(*(metric_names(e) for e in exprs))
    assert len(named) >= (8 if source == "rules" else 15)  # the reading above found them
    unknown = sorted(named - exported(fake_api))
    assert not unknown, f"{source} name metrics ClawHQ does not export: {unknown}"


def test_the_engine_gauge_says_whether_clawhq_follows_the_engine(fake_api: Api) -> None:
    text = fake_api.client.get("/metrics").text
    assert re.search(r"^clawhq_engine_up 1\.0$", text, re.M), text
    fake_api.context.deps.observed.lost()
    assert re.search(r"^clawhq_engine_up 0\.0$", fake_api.client.get("/metrics").text, re.M)
