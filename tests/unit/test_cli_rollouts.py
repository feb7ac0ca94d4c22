"""``clawhq rollout`` and ``clawhq image build --version`` / ``image list`` (no engine)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from clawhq.cli import app, image_versions, images, rollout
from clawhq.cli.images import ImageKind
from clawhq.db.engine import create_db_engine, make_session_factory
from clawhq.db.models import Agent, ImageVersion, Rollout, User
from clawhq.errors import ConfigError
from clawhq.status import AgentStatus, DesiredState
from tests.doubles.runtime import FakeRuntime

runner = CliRunner()


@pytest.fixture
def cli_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str) -> Any:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("CLAWHQ_DATA_DIR", str(tmp_path))
    engine = create_db_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


def make_agents(sessions: Any, count: int) -> list[str]:
    with sessions() as session:
        user = User(email=f"u{uuid.uuid4().hex[:10]}@example.com", plan_name="team")
        session.add(user)
        session.flush()
        agents = [
            Agent(
                user_id=user.id,
                name=f"a{i}",
                status=AgentStatus.RUNNING,
                desired_state=DesiredState.RUNNING,
            )
            for i in range(count)
        ]
        session.add_all(agents)
        session.commit()
        return [a.id for a in agents]


def test_start_status_pause_resume_abort(cli_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = make_agents(cli_db, 3)
    monkeypatch.setattr(rollout, "_image_on_engine", lambda settings, image: True)
    args = ["--image", "clawhq-openclaw:2", "--agents", f"{ids[0]},{ids[1]}", "--agents", ids[2]]
    started = runner.invoke(app, ["rollout", "start", *args, "--max-unavailable", "2"])
    assert started.exit_code == 0, started.output
    lines = started.stdout.strip().splitlines()
    assert "3 agent(s) to clawhq-openclaw:2, 2 at a time" in lines[0]
    assert "clawhq serve` carries it out" in lines[0]
    rollout_id = lines[-1]
    with cli_db() as session:
        row = session.get(Rollout, rollout_id)
        assert (row.image, row.max_unavailable, row.created_by) == ("clawhq-openclaw:2", 2, "cli")

    again = runner.invoke(app, ["rollout", "start", "--all"])
    assert again.exit_code == 1
    assert "abort it first" in again.output

    plain = runner.invoke(app, ["rollout", "status"])
    assert plain.exit_code == 0, plain.output
    first, *members = plain.stdout.strip().splitlines()
    assert first.startswith(f"rollout {rollout_id} running image=clawhq-openclaw:2")
    assert "progress=0% pending=3" in first
    assert [line.split()[0] for line in members] == ids
    as_json = json.loads(runner.invoke(app, ["rollout", "status", rollout_id, "--json"]).stdout)
    assert (as_json["id"], as_json["total"], as_json["maxFailures"]) == (rollout_id, 3, 1)
    assert as_json["counts"]["pending"] == 3

    for action, state in (("pause", "paused"), ("resume", "running"), ("abort", "aborted")):
        done = runner.invoke(app, ["rollout", action])
        assert done.exit_code == 0, done.output
        assert done.stdout.strip() == f"rollout {rollout_id} is {state}"
    nothing = runner.invoke(app, ["rollout", "pause"])
    assert nothing.exit_code == 1
    assert "no rollout in progress" in nothing.output
    refused = runner.invoke(app, ["rollout", "resume", rollout_id])
    assert refused.exit_code == 1
    assert "cannot resume a rollout that is aborted" in refused.output
    watched = runner.invoke(app, ["rollout", "status", "--watch"])
    assert watched.exit_code == 0  # finished: no waiting
    assert "skipped rollout aborted" in watched.stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["rollout", "start"], 2, "exactly one of --agents, --plan, --all"),
        (["rollout", "start", "--all", "--plan", "pro"], 2, "exactly one of"),
        (["rollout", "start", "--all", "--max-failures", "0"], 2, "max-failures"),
        (["rollout", "start", "--all", "--image", "gone:1"], 1, "not on the container engine"),
        (["rollout", "start", "--agents", "nope"], 1, "unknown agent(s): nope"),
        (["rollout", "status", "nope"], 1, "rollout nope not found"),
        (["rollout", "status"], 1, "no rollout yet"),
    ],
)
def test_refusals(
    cli_db: Any, monkeypatch: pytest.MonkeyPatch, args: list[str], code: int, message: str
) -> None:
    make_agents(cli_db, 1)
    monkeypatch.setattr(rollout, "_image_on_engine", lambda settings, image: False)
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    assert message in result.output


def test_an_unmigrated_database_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    monkeypatch.setenv("CLAWHQ_DATA_DIR", str(tmp_path))
    result = runner.invoke(app, ["rollout", "status"])
    assert result.exit_code == 1
    assert "clawhq db upgrade" in result.output


def test_image_tag_for_a_version() -> None:
    tag = image_versions.image_tag
    assert tag(ImageKind.openclaw, "clawhq-openclaw:latest", tag=None, version=None) == (
        "clawhq-openclaw:latest"
    )
    assert tag(ImageKind.openclaw, "x:latest", tag=None, version="2026.9.6") == (
        "clawhq-openclaw:2026.9.6"
    )
    assert tag(ImageKind.test_agent, "x", tag=None, version="3") == "clawhq-test-agent:3"
    assert tag(ImageKind.openclaw, "x", tag="mine:1", version=None) == "mine:1"
    for bad in ({"tag": "mine:1", "version": "2"}, {"tag": None, "version": "a b"}):
        with pytest.raises(ConfigError):
            tag(ImageKind.openclaw, "x", **bad)


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch) -> FakeRuntime:
    """``image build`` over the in-memory runtime: the build only tags an image."""
    from clawhq.runtime import docker_engine

    runtime = FakeRuntime()
    monkeypatch.setattr(docker_engine, "DockerRuntime", lambda *args, **kwargs: runtime)

    def build(runtime: FakeRuntime, tag: str) -> str:
        return runtime.build_image(Path("."), "Dockerfile", tag)

    monkeypatch.setattr(images, "build_test_agent", build)
    return runtime


def test_build_with_a_version_tags_and_records_it(cli_db: Any, fake_engine: FakeRuntime) -> None:
    built = runner.invoke(app, ["image", "build", "test-agent", "--version", "3"])
    assert built.exit_code == 0, built.output
    tag_line, image_id = built.stdout.strip().splitlines()[-2:]
    assert tag_line == "built clawhq-test-agent:3"
    assert "clawhq-test-agent:3" in fake_engine.images
    with cli_db() as session:
        assert session.get(ImageVersion, "clawhq-test-agent:3").image_id == image_id
    rebuilt = runner.invoke(app, ["image", "build", "test-agent", "--version", "3"])
    new_id = rebuilt.stdout.strip().splitlines()[-1]
    assert new_id != image_id
    runner.invoke(app, ["image", "build", "test-agent"])
    listed = runner.invoke(app, ["image", "list"])
    assert listed.exit_code == 0, listed.output
    rows = listed.stdout.strip().splitlines()
    assert [row.split()[0] for row in rows] == ["clawhq-test-agent:latest", "clawhq-test-agent:3"]
    assert new_id in rows[1]
    both = runner.invoke(app, ["image", "build", "test-agent", "--version", "3", "--tag", "a:b"])
    assert both.exit_code == 1
    assert "--tag or --version" in both.output


def test_build_records_best_effort(tmp_path: Path, monkeypatch, fake_engine: FakeRuntime) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'unmigrated.db'}")
    monkeypatch.setenv("CLAWHQ_DATA_DIR", str(tmp_path))
    built = runner.invoke(app, ["image", "build", "test-agent", "--version", "4"])
    assert built.exit_code == 0, built.output
    assert "could not record it in the database" in built.output
    assert "clawhq-test-agent:4" in fake_engine.images
    empty = runner.invoke(app, ["image", "list"])
    assert empty.exit_code == 1
    assert "clawhq db upgrade" in empty.output
