"""The CLI's commands that need no engine."""

from __future__ import annotations

import base64

from typer.testing import CliRunner

from clawhq.cli import app

runner = CliRunner()


def test_keys_generate_prints_a_valid_key() -> None:
    result = runner.invoke(app, ["keys", "generate"])
    assert result.exit_code == 0
    assert len(base64.urlsafe_b64decode(result.stdout.strip())) == 32


def test_users_create_prints_the_token_last(tmp_path, monkeypatch, database_url) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("CLAWHQ_DATA_DIR", str(tmp_path))
    result = runner.invoke(app, ["users", "create", "cli@example.com", "--plan", "team", "--admin"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert "plan team, admin" in lines[0]
    assert lines[-1].startswith("chq_")
    again = runner.invoke(app, ["users", "create", "cli@example.com"])
    assert again.exit_code == 1
    assert "already exists" in again.output


def test_invalid_settings_stop_with_the_variable_name(monkeypatch) -> None:
    monkeypatch.setenv("CLAWHQ_PORT_RANGE", "9-1")
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 2
    assert "CLAWHQ_PORT_RANGE" in result.output


def test_serve_in_production_refuses_unknown_settings(tmp_path, monkeypatch) -> None:
    from clawhq.crypto import generate_key

    monkeypatch.setenv("CLAWHQ_ENV", "production")
    monkeypatch.setenv("CLAWHQ_ENCRYPTION_KEY", generate_key())
    monkeypatch.setenv("CLAWHQ_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CLAWHQ_AGENT_MEMROY", "4g")
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 2
    assert "CLAWHQ_AGENT_MEMROY" in result.output
    assert "did you mean CLAWHQ_AGENT_MEMORY?" in result.output
    assert not (tmp_path / "clawhq.db").exists()  # refused before anything was made


def test_doctor_names_unknown_settings(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CLAWHQ_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:9")  # no engine: its checks fail
    monkeypatch.setenv("CLAWHQ_RUNTIME_TYPO", "swarm")
    result = runner.invoke(app, ["doctor"])
    line = next(x for x in result.output.splitlines() if "] settings:" in x)
    assert line.startswith("[ok  ]")  # development: named, not fatal
    assert "CLAWHQ_RUNTIME_TYPO is not a ClawHQ setting" in line
