"""ClawHQ killed mid-operation, its database or engine gone, the engine restarted: it must
converge afterwards with no orphan, no duplicate and no leaked port."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from clawhq.db.engine import create_db_engine
from tests.conftest import clean_database, remove_user_containers
from tests.integration.faults import TcpProxy, can_restart_dockerd, restart_dockerd
from tests.integration.helpers import (
    containers_of,
    deploy_running,
    sdk,
    wait_restarted,
    wait_status,
)
from tests.integration.served import Served, cli, serve_env
from tests.integration.test_supervision import FAST, wait_for

FAST_ENV = {k: str(v) for k, v in FAST.items()}


def converged(database_url: str, user_id: str) -> str | None:
    """What is still inconsistent between database and engine for ``user_id`` (None: nothing)."""
    engine = create_db_engine(database_url)
    try:
        with engine.connect() as conn:
            agents = conn.execute(
                text(
                    "SELECT id, status, desired_state, container_id, container_port "
                    "FROM agents WHERE user_id = :u"
                ),
                {"u": user_id},
            ).all()
            leases = dict(conn.execute(text("SELECT agent_id, port FROM port_leases")).all())
    finally:
        engine.dispose()
    known = {a.id for a in agents}
    # ignore_removed: the SDK inspects each listed container, and ClawHQ may be removing one
    # right then (what converging means); a container gone by then is not an orphan.
    for container in sdk().containers.list(
        all=True, filters={"label": f"clawhq.user-id={user_id}"}, ignore_removed=True
    ):
        if container.labels.get("clawhq.agent-id") not in known:
            return f"orphan container {container.name}"
    for agent in agents:
        found = containers_of(agent.id)
        if agent.desired_state == "DELETED":
            return f"agent {agent.id} still being deleted"
        if len(found) > 1:
            return f"agent {agent.id} has {len(found)} containers"
        if agent.status not in ("RUNNING", "STOPPED"):
            return f"agent {agent.id} is {agent.status}"
        if agent.status == "RUNNING":
            if not found or found[0].id != agent.container_id or found[0].status != "running":
                return f"agent {agent.id} RUNNING without its running container"
            if leases.get(agent.id) != agent.container_port:
                return f"agent {agent.id} runs without a lease on its port"
        if agent.status == "STOPPED" and found and found[0].status == "running":
            return f"agent {agent.id} STOPPED but its container runs"
        if not found and agent.id in leases:
            return f"agent {agent.id} holds port {leases[agent.id]} with no container"
    return None


@pytest.fixture
def postgres_database(postgresql_url: str) -> Iterator[str]:
    with clean_database(postgresql_url) as url:
        yield url


@pytest.mark.parametrize("round_", range(3))
def test_sigkill_during_operations_converges(
    round_: int, tmp_path: Path, database_url: str, docker_runtime, test_image: str
) -> None:
    env = serve_env(tmp_path / "data", database_url, port_range="19640-19659", **FAST_ENV)
    served = Served(env, tmp_path / "serve.log").start()
    created = cli(env, "users", "create", f"kill{round_}@example.com", "--plan", "pro")
    token = created.stdout.strip().splitlines()[-1]
    h = {"Authorization": f"Bearer {token}"}
    user_id = httpx.get(f"{served.base}/api/auth/me", headers=h).json()["id"]
    try:
        ids = [
            httpx.post(
                f"{served.base}/api/agents",
                json={"name": f"k{i}", "apiKey": "sk-test-1234"},
                headers=h,
            ).json()["id"]
            for i in range(4)
        ]
        # Two agents run already; then deploy, start, stop and delete all at once, and kill
        # ClawHQ somewhere in the middle of them.
        for agent_id in ids[:2]:
            httpx.post(f"{served.base}/api/agents/{agent_id}/deploy", headers=h)
        wait_for(
            lambda: all(
                httpx.get(f"{served.base}/api/agents/{a}", headers=h).json()["status"] == "RUNNING"
                for a in ids[:2]
            ),
            what="two running agents",
        )
        calls = [
            ("post", f"{ids[0]}/stop"),
            ("delete", ids[1]),
            ("post", f"{ids[2]}/deploy"),
            ("post", f"{ids[3]}/start"),
        ]

        def fire(method: str, path: str) -> None:
            # The server may die under the request: that is the point.
            with contextlib.suppress(httpx.TransportError):
                httpx.request(method, f"{served.base}/api/agents/{path}", headers=h, timeout=10)

        threads = [threading.Thread(target=fire, args=c) for c in calls]
        for thread in threads:
            thread.start()
        time.sleep(random.uniform(0.0, 0.4))
        served.kill()
        for thread in threads:
            thread.join(timeout=15)

        served = Served(env, tmp_path / "serve.log").start()  # ClawHQ comes back
        wait_for(
            lambda: converged(database_url, user_id) is None,
            timeout=90,
            what=f"convergence ({converged(database_url, user_id)})",
        )
    finally:
        served.stop()
        remove_user_containers(docker_runtime, [user_id])


def test_database_outage_answers_503_then_recovers(
    postgres_database: str, make_settings, docker_runtime, test_image: str
) -> None:
    from sqlalchemy.engine import make_url

    from tests.conftest import running_app

    real = make_url(postgres_database)
    proxy = TcpProxy(real.host or "127.0.0.1", real.port or 5432).start()
    through_proxy = real.set(host="127.0.0.1", port=proxy.port).render_as_string(
        hide_password=False
    )
    settings = make_settings(database_url=through_proxy, **FAST)
    with running_app(settings) as api:
        me = api.user()
        agent = api.agent(me)
        running = deploy_running(api, me, agent["id"])
        try:
            proxy.cut()
            down = api.client.get("/api/agents", headers=me)
            assert down.status_code == 503
            assert down.json()["code"] == "database_unavailable"
            # The single-agent read goes through the event loop's own pool: the same answer.
            down = api.client.get(f"/api/agents/{agent['id']}", headers=me)
            assert down.status_code == 503
            assert down.json()["code"] == "database_unavailable"
            assert api.client.get("/health").json()["database"].startswith("error")
            # The agent crashes while the database is away.
            sdk().containers.get(running["containerId"]).kill()
            time.sleep(3)
            # The controller's workers and sources outlive the outage.
            threads = api.context.sources.threads + api.context.controller.threads
            assert threads and all(t.is_alive() for t in threads)
        finally:
            proxy.restore()
        assert api.client.get("/api/agents", headers=me).status_code == 200
        assert api.client.get(f"/api/agents/{agent['id']}", headers=me).status_code == 200
        back = wait_restarted(api, me, agent["id"])
        assert back["lastExitCode"] == 137
        remove_user_containers(docker_runtime, [me["X-User-Id"]])
    proxy.cut()


def test_unreachable_engine_gives_clear_errors_and_no_crash_loop(
    tmp_path: Path, database_url: str
) -> None:
    env = serve_env(tmp_path / "data", database_url, **FAST_ENV)
    env["DOCKER_HOST"] = f"unix://{tmp_path}/no-engine.sock"
    served = Served(env, tmp_path / "serve.log").start(wait_for=503)
    try:
        health = httpx.get(f"{served.base}/health").json()
        assert health["engine"] == "error: engine_unavailable"
        assert health["database"] == "ok"
        token = cli(env, "users", "create", "noengine@example.com").stdout.strip().splitlines()[-1]
        h = {"Authorization": f"Bearer {token}"}
        agent = httpx.post(
            f"{served.base}/api/agents", json={"name": "x", "apiKey": "sk-test-1234"}, headers=h
        ).json()
        reply = httpx.post(f"{served.base}/api/agents/{agent['id']}/deploy", headers=h)
        assert reply.status_code == 503
        assert reply.json()["code"] == "engine_unavailable"
        assert "Docker Engine" in reply.json()["detail"] or "unreachable" in reply.json()["detail"]
        listed = httpx.get(f"{served.base}/api/agents", headers=h).json()["agents"]
        assert listed[0]["status"] == "STOPPED"
        assert listed[0]["containerStatus"] == "unknown"
        time.sleep(4)
        assert served.alive()
        # Reconnection to the event stream backs off instead of spinning.
        assert 1 <= served.log().count("reconnecting in") <= 5
    finally:
        served.stop()


@pytest.mark.engine_restart
def test_engine_restart_brings_agents_back(docker_app, docker_runtime, tmp_path: Path) -> None:
    reason = can_restart_dockerd()
    if reason:
        pytest.skip(f"cannot restart Docker Engine here: {reason}")
    with docker_app(**FAST) as api:
        me = api.user(plan="pro")
        ids = [api.agent(me)["id"] for _ in range(2)]
        for agent_id in ids:
            deploy_running(api, me, agent_id)

        def engine_ready() -> bool:
            try:
                docker_runtime.ping()
                return True
            except Exception:
                return False

        log_dir = Path("/var/tmp/clawhq-scripts")
        log_dir.mkdir(parents=True, exist_ok=True)
        restart_dockerd(log_dir / "dockerd.log", engine_ready)
        for agent_id in ids:
            assert wait_restarted(api, me, agent_id, timeout=120)["containerStatus"] == "running"
        assert wait_status(api, me, ids[0], "RUNNING")["containerStatus"] == "running"
