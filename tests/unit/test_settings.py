from __future__ import annotations

import pytest

from clawhq.crypto import generate_key
from clawhq.errors import ConfigError
from clawhq.setting_values import parse_size
from clawhq.settings import load_settings


def test_defaults_match_the_documented_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CLAWHQ_ENV", "CLAWHQ_AGENT_MEMORY", "DATABASE_URL", "CLAWHQ_PORT_RANGE"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.env == "development"
    assert settings.agent_image == "clawhq-openclaw:latest"
    assert settings.agent_memory == 2 * 1024**3
    assert (settings.agent_cpu_quota, settings.agent_cpu_period) == (50_000, 100_000)
    assert settings.port_range == (19000, 19999)
    assert str(settings.agent_bind_ip) == "127.0.0.1"
    assert settings.agent_internal_port == 18789
    assert settings.agent_health_path == "/healthz"
    assert settings.health_interval == 30
    assert settings.stop_timeout == 10
    assert settings.resolved_database_url.startswith("sqlite:///")


def test_reads_the_environment_names_from_the_issue(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@db/clawhq")
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/other.sock")
    monkeypatch.setenv("CLAWHQ_AGENT_MEMORY", "1536m")
    monkeypatch.setenv("CLAWHQ_PORT_RANGE", "20000-20009")
    monkeypatch.setenv("CLAWHQ_CLAUDE_API_KEY", "sk-bundled")
    settings = load_settings()
    assert settings.resolved_database_url == "postgresql://u:p@db/clawhq"
    assert settings.docker_host == "unix:///run/other.sock"
    assert settings.agent_memory == 1536 * 1024**2
    assert settings.port_count == 10
    assert settings.bundled_key("claude") == "sk-bundled"
    assert settings.bundled_key("grok") is None


def test_production_without_a_key_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="CLAWHQ_ENCRYPTION_KEY"):
        load_settings(env="production", encryption_key=None)
    assert load_settings(env="production", encryption_key=generate_key()).env == "production"


@pytest.mark.parametrize(
    ("field", "value", "variable"),
    [
        ("port_range", "19999-19000", "CLAWHQ_PORT_RANGE"),
        ("port_range", "abc", "CLAWHQ_PORT_RANGE"),
        ("agent_memory", "lots", "CLAWHQ_AGENT_MEMORY"),
        ("agent_memory", "1m", "CLAWHQ_AGENT_MEMORY"),
        ("encryption_key", "not-a-key", "CLAWHQ_ENCRYPTION_KEY"),
        ("agent_bind_ip", "localhost:80", "CLAWHQ_AGENT_BIND_IP"),
        ("agent_health_path", "healthz", "CLAWHQ_AGENT_HEALTH_PATH"),
        ("webhook_base_url", "ftp://x", "CLAWHQ_WEBHOOK_BASE_URL"),
        ("env", "staging", "CLAWHQ_ENV"),
        ("database_url", 42, "DATABASE_URL"),
    ],
)
def test_invalid_values_name_their_variable(field: str, value: object, variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(**{field: value})
    assert variable in caught.value.message


def test_parse_size() -> None:
    assert parse_size("512m") == 512 * 1024**2
    assert parse_size("1g") == parse_size("1GiB") == 1024**3
    assert parse_size(4096) == 4096
    with pytest.raises(ValueError, match="not a size"):
        parse_size("1.5g")


def test_unknown_variables_are_named_with_the_closest_known_one() -> None:
    from clawhq.settings import unknown_settings

    found = unknown_settings(
        {
            "CLAWHQ_AGENT_MEMROY": "4g",
            "CLAWHQ_NOT_A_THING": "1",
            "CLAWHQ_AGENT_MEMORY": "4g",  # known: not named
            "CLAWHQ_TEST_STRICT": "1",  # the test suite's own
            "CLAWHQ_IMAGE_CACHE": "/tmp",  # read by the image build
            "PATH": "/bin",
        }
    )
    assert found == [
        "CLAWHQ_AGENT_MEMROY is not a ClawHQ setting and does nothing "
        "(did you mean CLAWHQ_AGENT_MEMORY?)",
        "CLAWHQ_NOT_A_THING is not a ClawHQ setting and does nothing",
    ]


def test_every_group_keeps_its_validators() -> None:
    """The groups are combined by inheritance: two validators of one name would silently
    replace each other, so each size is checked here."""
    from clawhq.settings import load_settings

    settings = load_settings(llm_max_body="1k", proxy_max_message="2k", agent_disk="32m")
    assert (settings.llm_max_body, settings.proxy_max_message) == (1024, 2048)
    assert settings.agent_disk == 32 * 1024**2


def test_no_two_groups_name_a_validator_alike() -> None:
    from clawhq.settings import Settings

    seen: dict[str, str] = {}
    for group in Settings.__mro__[1:]:
        if not group.__module__.startswith("clawhq.settings"):
            continue
        for name in vars(group):
            if name.startswith("_") and not name.startswith(("__", "_abc")):
                assert name not in seen, f"{name} in {group.__name__} and {seen[name]}"
                seen[name] = group.__name__
