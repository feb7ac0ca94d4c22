"""Running `clawhq serve` as a real process, the way an operator does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import TEST_EGRESS_NETWORK, TEST_IMAGE, TEST_NETWORK
from tests.standins.gateway import free_port

CLAWHQ = [sys.executable, "-m", "clawhq"]


def serve_env(data_dir: Path, database_url: str, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAWHQ_")}
    env.update(
        {
            "DATABASE_URL": database_url,
            "CLAWHQ_DATA_DIR": str(data_dir),
            "CLAWHQ_PORT": str(free_port()),
            "CLAWHQ_AGENT_IMAGE": TEST_IMAGE,
            "CLAWHQ_AGENT_NETWORK": TEST_NETWORK,
            "CLAWHQ_EGRESS_NETWORK": TEST_EGRESS_NETWORK,
            "CLAWHQ_EGRESS_PROXY_PORT": str(free_port()),
            "CLAWHQ_AGENT_LISTENER_PORT": str(free_port()),
            "CLAWHQ_AGENT_MEMORY": "64m",
            "CLAWHQ_STARTUP_POLL_INTERVAL": "0.1",
            # Served tests run as root: without this, serve would install firewall rules on
            # the shared test network. The network isolation tests turn it back on.
            "CLAWHQ_FIREWALL": "off",
        }
    )
    env.update({f"CLAWHQ_{k.upper()}": v for k, v in settings.items()})
    return env


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLAWHQ, *args], env=env, capture_output=True, text=True, timeout=60)


class Served:
    """One `clawhq serve` process; its output goes to ``log_path``."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.base = f"http://127.0.0.1:{env['CLAWHQ_PORT']}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait_for: int = 200) -> Served:
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [*CLAWHQ, "serve"], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        for _ in range(150):
            try:
                if httpx.get(f"{self.base}/health", timeout=1).status_code in (wait_for, 503):
                    return self
            except httpx.TransportError:
                pass
            assert self.proc.poll() is None, self.log()
            time.sleep(0.1)
        raise AssertionError("clawhq serve did not come up:\n" + self.log())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=20)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
