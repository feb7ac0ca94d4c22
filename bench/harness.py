"""The benchmark's moving parts: a ClawHQ server process, its database, raw-Docker baselines."""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import httpx
from sqlalchemy import create_engine, insert, text

from clawhq.db import migrate
from clawhq.db.engine import create_db_engine, normalize_url
from clawhq.db.models import Agent, Plan

TEST_IMAGE = "clawhq-test-agent:latest"
NETWORK = "clawhq-bench"
PORT_RANGE = (20000, 20999)
MEMORY = "64m"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (a fraction: 0.99 for p99) of ``values``; NaN for none."""
    if not 0 <= q <= 1:
        raise ValueError(f"percentile takes a fraction in [0, 1], not {q}")
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def wait_until(check: Callable[[], bool], timeout: float, what: str, every: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every)
    raise TimeoutError(f"timed out waiting for {what}")


def healthy(url: str, client: httpx.Client) -> bool:
    try:
        response = client.get(url, timeout=1)
        return response.status_code == 200 and response.json().get("ok") is True
    except (httpx.HTTPError, ValueError):
        return False


@dataclass
class Database:
    """A fresh, migrated database for one benchmark run: SQLite file or PostgreSQL."""

    url: str
    drop: Callable[[], None] = field(default=lambda: None)

    @classmethod
    @contextlib.contextmanager
    def create(cls, kind: str, workdir: Path) -> Iterator[Database]:
        if kind == "sqlite":
            db = cls(f"sqlite:///{workdir / 'bench.db'}")
        else:
            admin_url = os.environ.get(
                "CLAWHQ_TEST_POSTGRES_URL",
                "postgresql+psycopg://clawhq:clawhq@127.0.0.1:5432/postgres",
            )
            name = f"clawhq_bench_{uuid.uuid4().hex[:8]}"
            admin = create_engine(normalize_url(admin_url), isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))

            def drop() -> None:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                admin.dispose()

            db = cls(normalize_url(admin_url).rsplit("/", 1)[0] + f"/{name}", drop)
        engine = create_db_engine(db.url)
        migrate.upgrade(engine)
        with engine.begin() as conn:
            conn.execute(
                insert(Plan).values(name="bench", max_agents=100_000, bundled_keys_allowed=True)
            )
        engine.dispose()
        try:
            yield db
        finally:
            db.drop()

    def add_agents(self, user_id: str, count: int) -> list[str]:
        """Insert ``count`` stopped agents for ``user_id`` straight into the database."""
        engine = create_db_engine(self.url)
        ids = [uuid.uuid4().hex for _ in range(count)]
        with engine.begin() as conn:
            for start in range(0, count, 1000):
                conn.execute(
                    insert(Agent),
                    [
                        {"id": agent_id, "user_id": user_id, "name": f"bulk-{agent_id[:10]}"}
                        for agent_id in ids[start : start + 1000]
                    ],
                )
        engine.dispose()
        return ids


def deploy_running(
    client: httpx.Client,
    agent_id: str,
    headers: dict[str, str],
    timeout: float = 30,
    every: float = 0.01,
) -> dict:
    """Deploy through the API and poll until the agent is RUNNING; return its last view."""
    client.post(f"/api/agents/{agent_id}/deploy", headers=headers).raise_for_status()
    seen: dict = {}

    def running() -> bool:
        seen.update(client.get(f"/api/agents/{agent_id}", headers=headers).json())
        return seen["status"] == "RUNNING"

    wait_until(running, timeout, "RUNNING", every=every)
    return seen


class Server:
    """ClawHQ's API in its own process (bench/server.py), over a real engine."""

    def __init__(
        self,
        database: Database,
        workdir: Path,
        env: dict[str, str] | None = None,
        **settings: str,
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CLAWHQ_")}
        self.env.update(
            {
                "DATABASE_URL": database.url,
                "CLAWHQ_DATA_DIR": str(workdir / "data"),
                "CLAWHQ_PORT": str(self.port),
                "CLAWHQ_AGENT_IMAGE": TEST_IMAGE,
                "CLAWHQ_AGENT_NETWORK": NETWORK,
                "CLAWHQ_AGENT_MEMORY": MEMORY,
                "CLAWHQ_PORT_RANGE": f"{PORT_RANGE[0]}-{PORT_RANGE[1]}",
                "CLAWHQ_MAX_DEPLOYS_IN_FLIGHT": "500",
                "CLAWHQ_LOG_FORMAT": "json",
                # The load generator is one user hammering one agent; measure the API, not the
                # rate limiter.
                "CLAWHQ_RATE_LIMIT_USER": "100000000",
            }
        )
        self.env.update({f"CLAWHQ_{k.upper()}": v for k, v in settings.items()})
        self.env.update(env or {})
        self.log = workdir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(base_url=self.base, timeout=30)

    def __enter__(self) -> Server:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.server"], env=self.env, stdout=log, stderr=log
            )
        wait_until(self._up, 60, "the ClawHQ server", every=0.1)
        return self

    def _up(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError("server exited:\n" + self.log.read_text()[-3000:])
        try:
            return self.client.get("/health").status_code == 200
        except httpx.TransportError:
            return False

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def user(self) -> tuple[str, dict[str, str]]:
        """A user on the unlimited bench plan: (id, auth headers)."""
        email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
        created = subprocess.run(
            [sys.executable, "-m", "clawhq", "users", "create", email, "--plan", "bench"],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        headers = {"Authorization": f"Bearer {created.stdout.strip().splitlines()[-1]}"}
        user_id = self.client.get("/api/auth/me", headers=headers).json()["id"]
        return user_id, headers

    def agent(self, headers: dict[str, str]) -> str:
        body = {"name": f"b-{uuid.uuid4().hex[:10]}", "apiKey": "sk-bench-000000"}
        reply = self.client.post("/api/agents", json=body, headers=headers)
        reply.raise_for_status()
        return str(reply.json()["id"])

    def status(self, agent_id: str, headers: dict[str, str]) -> dict:
        return self.client.get(f"/api/agents/{agent_id}", headers=headers).json()


class RawDocker:
    """The baseline: the same container, limits and hardening, started by hand."""

    def __init__(self) -> None:
        self.client = docker.from_env(version="1.41", max_pool_size=64)
        self.created: list[str] = []
        self._ports = iter(range(21000, 21999))

    def run(self) -> tuple[str, str]:
        port = next(self._ports)
        container = self.client.containers.run(
            TEST_IMAGE,
            detach=True,
            user="1001:1001",
            mem_limit=MEMORY,
            memswap_limit=MEMORY,
            cpu_quota=50_000,
            cpu_period=100_000,
            pids_limit=256,
            read_only=True,
            tmpfs={"/tmp": "rw,noexec,nosuid,size=64m"},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"],
            init=True,
            network=NETWORK,
            ports={"18789/tcp": ("127.0.0.1", port)},
            labels={"clawhq.bench": "raw"},
        )
        self.created.append(container.id)
        return container.id, f"http://127.0.0.1:{port}/healthz"

    def cleanup(self) -> None:
        for container_id in self.created:
            with contextlib.suppress(docker.errors.NotFound):
                self.client.api.remove_container(container_id, force=True)
        self.created.clear()


def remove_bench_containers() -> None:
    client = docker.from_env(version="1.41")
    for container in client.containers.list(all=True, filters={"network": NETWORK}):
        container.remove(force=True)
    for volume in client.volumes.list(filters={"label": "clawhq.service=openclaw-agent"}):
        if volume.name.startswith("clawhq-workspace-"):
            with contextlib.suppress(docker.errors.APIError):
                volume.remove(force=True)


def ensure_network() -> None:
    client = docker.from_env(version="1.41")
    try:
        client.networks.get(NETWORK)
    except docker.errors.NotFound:
        client.networks.create(
            NETWORK, driver="bridge", options={"com.docker.network.bridge.enable_icc": "false"}
        )


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def workdir() -> contextlib.AbstractContextManager[str]:
    return tempfile.TemporaryDirectory(prefix="clawhq-bench-")
