"""Shared fixtures: both databases, the real Docker Engine, and apps wired to either.

``scripts/test`` installs and starts Docker Engine and PostgreSQL. Run bare, pytest skips what
it cannot reach and says why; with ``CI=true`` an unreachable engine or database fails instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, delete, insert, text

from clawhq.api.app import create_app
from clawhq.api.services import ApiServices
from clawhq.context import AppContext, build_context
from clawhq.crypto import generate_key
from clawhq.db import migrate
from clawhq.db.engine import create_db_engine, normalize_url
from clawhq.db.models import Base, Plan
from clawhq.settings import Settings, load_settings
from tests.doubles.runtime import FakeRuntime

pytest.register_assert_rewrite("tests.image_guard")
from tests import image_guard  # noqa: E402  (after its assertion rewriting is registered)

pytest_plugins = ["tests.image_guard"]

IN_CI = os.environ.get("CI", "").lower() == "true" or bool(os.environ.get("CLAWHQ_TEST_STRICT"))
POSTGRES_ADMIN_URL = os.environ.get(
    "CLAWHQ_TEST_POSTGRES_URL", "postgresql+psycopg://clawhq:clawhq@127.0.0.1:5432/postgres"
)
TEST_IMAGE = "clawhq-test-agent:latest"
image_guard.provide("test_image", TEST_IMAGE)
TEST_NETWORK = "clawhq-test-agents"
TEST_EGRESS_NETWORK = "clawhq-test-egress"
DEFAULT_PLANS = (
    {"name": "free", "max_agents": 1, "bundled_keys_allowed": False},
    {"name": "pro", "max_agents": 5, "bundled_keys_allowed": True},
    {"name": "team", "max_agents": 25, "bundled_keys_allowed": True},
)


def unavailable(what: str, why: str) -> None:
    message = f"{what} is not available ({why}); run the suite with scripts/test"
    if IN_CI:
        pytest.fail(f"{message} — CI never skips it", pytrace=False)
    pytest.skip(message)


# -- databases ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    name = f"clawhq_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(normalize_url(POSTGRES_ADMIN_URL), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        unavailable("PostgreSQL", f"{POSTGRES_ADMIN_URL.split('@')[-1]}: {type(exc).__name__}")
    url = normalize_url(POSTGRES_ADMIN_URL).rsplit("/", 1)[0] + f"/{name}"
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'clawhq.db'}"


_migrated: dict[str, Engine] = {}


@contextlib.contextmanager
def clean_database(url: str) -> Iterator[str]:
    """A migrated schema that is emptied again (plans reset to their defaults) afterwards."""
    engine = _migrated.get(url)
    if engine is None:
        engine = _migrated[url] = create_db_engine(url)
        migrate.upgrade(engine)
    yield url
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            if table.name != "audit_events":  # append-only: triggers refuse deletes
                conn.execute(delete(table))
        conn.execute(insert(Plan), [dict(p) for p in DEFAULT_PLANS])


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each test using this runs once on SQLite and once on PostgreSQL."""
    with clean_database(request.getfixturevalue(f"{request.param}_url")) as url:
        yield url


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that restart the Docker Engine run last, so nothing else sees the engine go."""
    items.sort(key=lambda item: item.get_closest_marker("engine_restart") is not None)


def pytest_sessionfinish(session: pytest.Session) -> None:
    for engine in _migrated.values():
        engine.dispose()


# -- settings and apps -------------------------------------------------------------------------


@pytest.fixture
def make_settings(tmp_path: Path, database_url: str) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "disk_dir": tmp_path / "disks",  # capped workspaces, when the host can make them
            "database_url": database_url,
            "encryption_key": generate_key(),
            "agent_image": TEST_IMAGE,
            "agent_network": TEST_NETWORK,
            "egress_network": TEST_EGRESS_NETWORK,
            "agent_memory": "64m",
            "port_range": "19400-19499",
            "start_timeout": 20,
            "startup_poll_interval": 0.1,
            "stop_timeout": 2,
            "webhook_base_url": "http://127.0.0.1:9",
            # Tests register many users from one address; test_abuse_limits sets its own.
            "rate_limit_auth": 100_000,
            "rate_limit_register": 100_000,
            "rate_limit_user": 100_000,
        }
        values.update(overrides)
        return load_settings(**values)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


class Api:
    """A TestClient with helpers to make users and agents through the real endpoints."""

    def __init__(self, client: TestClient, context: AppContext) -> None:
        self.client = client
        self.context = context

    @property
    def services(self) -> ApiServices:
        """What the app was wired with (its lifespan's :func:`build_services`)."""
        services: ApiServices = self.client.app.state.services  # type: ignore[attr-defined]
        return services

    def user(self, plan: str = "free", email: str | None = None) -> dict[str, str]:
        """Register a user, move it to ``plan``; return auth headers (and ``id``)."""
        email = email or f"u{uuid.uuid4().hex[:12]}@example.com"
        reply = self.client.post(
            "/api/auth/register", json={"email": email, "password": "correct horse battery"}
        )
        assert reply.status_code == 201, reply.text
        body = reply.json()
        if plan != "free":
            from clawhq.services import users

            with self.context.sessions() as session:
                users.set_plan(session, body["user"]["id"], plan)
        return {"Authorization": f"Bearer {body['token']}", "X-User-Id": body["user"]["id"]}

    def admin(self) -> dict[str, str]:
        """Auth headers of a new admin (and ``X-User-Id``)."""
        from clawhq.services import users

        with self.context.sessions() as session:
            admin = users.create_user(
                session, f"admin-{uuid.uuid4().hex[:12]}@example.com", is_admin=True
            )
            token = users.issue_token(session, admin, "test", None)
            session.commit()
        return {"Authorization": f"Bearer {token}", "X-User-Id": admin.id}

    def agent(self, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
        body = {"name": f"agent-{uuid.uuid4().hex[:6]}", "apiKey": "sk-test-0123456789"}
        body.update(fields)
        reply = self.client.post("/api/agents", json=body, headers=headers)
        assert reply.status_code == 201, reply.text
        return reply.json()  # type: ignore[no-any-return]


@contextlib.contextmanager
def running_app(settings: Settings, runtime: Any = None, **kwargs: Any) -> Iterator[Api]:
    holder: dict[str, AppContext] = {}

    def make() -> AppContext:
        holder["context"] = build_context(settings, runtime=runtime, **kwargs)
        return holder["context"]

    with TestClient(create_app(make), raise_server_exceptions=False) as client:
        yield Api(client, holder["context"])


def handed_secrets(runtime: FakeRuntime, container_id: str) -> dict[str, str]:
    """The secrets the container's latest start was handed: the one file ClawHQ put into it
    before that start (its env holds none)."""
    starts = runtime.started_with.get(container_id)
    assert starts, f"container {container_id[:12]} was never started"
    (handed,) = starts[-1].values()
    found: dict[str, str] = json.loads(handed.content)
    return found


@pytest.fixture
def fake_runtime() -> FakeRuntime:
    return FakeRuntime(images={TEST_IMAGE})


@pytest.fixture
def fake_api(settings: Settings, fake_runtime: FakeRuntime) -> Iterator[Api]:
    """The API over the in-memory runtime; agents count as healthy once started."""

    def probe(url: str) -> bool:
        return True

    with running_app(
        settings.model_copy(update={"supervise": False}), fake_runtime, probe=probe
    ) as api:
        yield api


# -- the real Docker Engine --------------------------------------------------------------------


@pytest.fixture(scope="session")
def docker_runtime() -> Iterator[Any]:
    from clawhq.errors import ClawHQError
    from clawhq.runtime.docker_engine import DockerRuntime

    runtime = DockerRuntime(os.environ.get("DOCKER_HOST"))
    try:
        runtime.ping()
    except ClawHQError as exc:
        unavailable("Docker Engine", exc.message)
    yield runtime
    runtime.close()


#: The real OpenClaw image's tag in tests; a second checkout building at the same time sets
#: its own, so the two never replace each other's image.
OPENCLAW_TEST_TAG = os.environ.get("CLAWHQ_TEST_OPENCLAW_TAG", "clawhq-openclaw:test")
image_guard.provide("openclaw_image", OPENCLAW_TEST_TAG)
image_guard.provide("image_variant", "clawhq-test-agent:")


@pytest.fixture(scope="session")
def openclaw_image(docker_runtime: Any) -> str:
    """The production image, built through the registry-less path (cached between runs)."""
    from clawhq.cli.images import build_openclaw
    from clawhq.errors import ConfigError

    try:
        build_openclaw(docker_runtime, OPENCLAW_TEST_TAG)
    except ConfigError as exc:
        if "is not installed" in exc.message or "needs root" in exc.message:
            unavailable("the OpenClaw image build", exc.message)
        raise
    return OPENCLAW_TEST_TAG


@pytest.fixture(scope="session")
def test_image(docker_runtime: Any) -> str:
    from clawhq.cli.images import build_test_agent

    build_test_agent(docker_runtime, TEST_IMAGE)
    return TEST_IMAGE


@pytest.fixture(scope="session")
def image_variant(docker_runtime: Any, test_image: str, tmp_path_factory: pytest.TempPathFactory):
    """Build (once) the test agent with a fixed ``TEST_AGENT_MODE``; returns the tag."""
    built: dict[str, str] = {}

    def variant(mode: str) -> str:
        if mode not in built:
            context = tmp_path_factory.mktemp(f"variant-{mode}")
            (context / "Dockerfile").write_text(f"FROM {test_image}\nENV TEST_AGENT_MODE={mode}\n")
            tag = f"clawhq-test-agent:{mode}"
            docker_runtime.build_image(context, "Dockerfile", tag)
            built[mode] = tag
        return built[mode]

    return variant


def remove_user_containers(runtime: Any, user_ids: list[str]) -> None:
    """Remove every container and workspace volume the given users' agents left behind."""
    import docker

    from clawhq.runtime import labels

    client = docker.from_env(version="1.41")
    from clawhq.errors import EngineError

    left: list[str] = []
    for user_id in user_ids:
        for container in runtime.list_managed({labels.USER_ID: user_id}):
            # A container that dockerd started while it was shutting down (the engine-restart
            # test) can keep a root filesystem mounted where the next dockerd cannot reach it
            # ("device or resource busy" for good): say so and leave it, it is Docker's.
            for attempt in range(3):
                try:
                    runtime.remove(container.id)
                    break
                except EngineError as exc:
                    if "device or resource busy" not in exc.message:
                        raise
                    if attempt == 2:
                        left.append(container.id)
                        warnings.warn(
                            f"left container {container.id[:12]}: {exc.message}", stacklevel=2
                        )
                    time.sleep(0.5)
        for volume in client.volumes.list(filters={"label": f"{labels.USER_ID}={user_id}"}):
            try:
                runtime.remove_volume(volume.name)
            except EngineError:
                if not left:  # in use by a container left above: that one's fault
                    raise


@pytest.fixture
def docker_app(
    make_settings: Callable[..., Settings], docker_runtime: Any, test_image: str
) -> Iterator[Callable[..., contextlib.AbstractContextManager[Api]]]:
    """Start the API over the real engine with settings overrides; cleans up what it made."""
    contexts: list[AppContext] = []

    @contextlib.contextmanager
    def start(**overrides: Any) -> Iterator[Api]:
        with running_app(make_settings(**overrides)) as api:
            contexts.append(api.context)
            yield api

    yield start
    for context in contexts:
        from clawhq.db.models import User

        engine = create_db_engine(context.settings.resolved_database_url)
        with engine.connect() as conn:
            ids = [row[0] for row in conn.execute(text(f"SELECT id FROM {User.__tablename__}"))]
        engine.dispose()
        remove_user_containers(docker_runtime, ids)
