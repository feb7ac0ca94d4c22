"""Building ClawHQ's agent images from the repository's ``docker/`` folder."""

from __future__ import annotations

import shutil
import tempfile
from enum import StrEnum
from pathlib import Path

from clawhq.errors import ConfigError
from clawhq.runtime.docker_engine import DockerRuntime

DOCKER_DIR = Path(__file__).resolve().parents[2] / "docker"
TEST_AGENT_TAG = "clawhq-test-agent:latest"
BUSYBOX = Path("/bin/busybox")


class ImageKind(StrEnum):
    openclaw = "openclaw"
    test_agent = "test-agent"


def is_static(binary: Path) -> bool:
    """Whether an ELF binary asks for no dynamic loader (it can run in a ``scratch`` image)."""
    return b"ld-linux" not in binary.read_bytes()[:8192]


def build_test_agent(runtime: DockerRuntime, tag: str = TEST_AGENT_TAG) -> str:
    """Build the busybox test agent FROM scratch; needs Debian's ``busybox-static``."""
    if not BUSYBOX.exists() or not is_static(BUSYBOX):
        raise ConfigError(
            f"{BUSYBOX} is missing or not statically linked: apt-get install -y busybox-static"
        )
    with tempfile.TemporaryDirectory(prefix="clawhq-test-agent-") as tmp:
        context = Path(tmp) / "context"
        shutil.copytree(DOCKER_DIR / "test-agent", context)
        shutil.copy2(BUSYBOX, context / "busybox")
        return runtime.build_image(context, "Dockerfile", tag)


def build_openclaw(
    runtime: DockerRuntime, tag: str, base_image: str | None, openclaw_version: str | None
) -> str:
    args = {}
    if base_image:
        args["BASE_IMAGE"] = base_image
    if openclaw_version:
        args["OPENCLAW_VERSION"] = openclaw_version
    return runtime.build_image(DOCKER_DIR, "Dockerfile.openclaw", tag, args)
