"""ClawHQ's Debian base image: a ``debootstrap --variant=minbase`` root filesystem with current
security updates, ``FROM scratch`` (no image registry; docs/openclaw-image.md).
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from clawhq.cli.host_commands import require_tool, run_command
from clawhq.cli.image_inputs import Stamps, digest
from clawhq.errors import ConfigError
from clawhq.runtime.docker_engine import DockerRuntime

log = logging.getLogger(__name__)

DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
BASE_TAG = f"clawhq-debian:{DEBIAN_SUITE}"
# tini: the init; ca-certificates: HTTPS to model providers and chat services. libstdc++6,
# which Node.js needs, comes with minbase (apt depends on it).
BASE_PACKAGES = ("ca-certificates", "tini")
# Bump to rebuild every cached root filesystem (when the recipe below changes).
ROOTFS_RECIPE = "1"


def debian_rootfs(cache_dir: Path, suite: str = DEBIAN_SUITE) -> Path:
    """A tarball of a Debian minbase root filesystem with current security updates (cached).

    Needs root and Debian's ``debootstrap``; takes about half a minute.
    """
    key = digest(ROOTFS_RECIPE, suite, DEBIAN_MIRROR, *BASE_PACKAGES)
    folder = cache_dir / "rootfs" / f"{suite}-{key}"
    tarball = folder / "rootfs.tar"
    if tarball.exists():
        return tarball
    debootstrap = require_tool("debootstrap", "debootstrap")
    if os.geteuid() != 0:
        raise ConfigError(
            "making the Debian base image needs root (debootstrap, chroot): run as root, "
            "or pass --base-image with a Debian bookworm image you have"
        )
    folder.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="rootfs-", dir=folder))
    try:
        log.info("debootstrap --variant=minbase %s (about 30 s)", suite)
        run_command(
            [
                debootstrap,
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                suite,
                root,
                DEBIAN_MIRROR,
            ],
            "debootstrap",
        )
        (root / "etc/apt/sources.list").write_text(
            f"deb {DEBIAN_MIRROR} {suite} main\n"
            f"deb {DEBIAN_MIRROR} {suite}-updates main\n"
            f"deb {DEBIAN_SECURITY_MIRROR} {suite}-security main\n"
        )
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        log.info("applying %s-updates and %s-security", suite, suite)
        run_command(["chroot", root, "apt-get", "-qq", "update"], "apt-get update (chroot)", env)
        run_command(
            ["chroot", root, "apt-get", "-y", "-qq", "upgrade"], "apt-get upgrade (chroot)", env
        )
        run_command(["chroot", root, "apt-get", "clean"], "apt-get clean (chroot)", env)
        _slim(root)
        partial = folder / "rootfs.tar.partial"
        with tarfile.open(partial, "w") as tar:
            for entry in sorted(root.iterdir()):
                # Docker provides /dev, /proc and /sys; keep the empty mount points only.
                if entry.name in ("dev", "proc", "sys"):
                    tar.add(entry, arcname=entry.name, recursive=False)
                else:
                    tar.add(entry, arcname=entry.name)
        partial.rename(tarball)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return tarball


def _slim(root: Path) -> None:
    """Drop apt's lists, manuals and translations (copyright files stay)."""
    for pattern in ("var/lib/apt/lists/*", "usr/share/man/*", "usr/share/info/*"):
        for path in root.glob(pattern):
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    for path in (root / "usr/share/locale").glob("*"):
        if path.name != "locale.alias":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    for path in (root / "usr/share/doc").rglob("*"):
        if path.is_file() and path.name != "copyright" and not path.is_symlink():
            path.unlink()


def build_debian_base(
    runtime: DockerRuntime, cache_dir: Path, tag: str = BASE_TAG, force: bool = False
) -> str:
    """The Debian minbase image (``FROM scratch`` + the root filesystem); returns its id."""
    tarball = debian_rootfs(cache_dir)
    dockerfile = 'FROM scratch\nADD rootfs.tar /\nCMD ["bash"]\n'
    inputs = digest(dockerfile, tarball.parent.name)
    stamps = Stamps(cache_dir / "images.json")
    if not force and (image := stamps.current(runtime, tag, inputs)):
        log.info("%s is up to date", tag)
        return image
    (tarball.parent / "Dockerfile").write_text(dockerfile)
    log.info("building %s from %s", tag, tarball)
    image = runtime.build_image(tarball.parent, "Dockerfile", tag)
    stamps.record(tag, inputs, image)
    return image
