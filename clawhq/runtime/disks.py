"""Workspace disks: one capped filesystem per agent workspace, on the engine's host.

Each disk is a sparse ext4 image ``<dir>/<name>.img`` loop-mounted (``nodev,nosuid,discard``)
at ``<dir>/<name>/``; the workspace volume is a bind of that mount point, so the kernel stops
writes past the image's size with ENOSPC inside that agent only (docs/disks.md). This module
runs host commands (``mkfs.ext4``, ``mount``, ``umount``, ``e2fsck``, ``resize2fs``) and never
talks to the engine: ``docker_volumes`` does that.

Every step is idempotent: ``ensure`` makes what is missing (the image through a ``.part``
file renamed once whole, so a failed step leaves no half-made image), mounts it again after a
reboot and grows it when asked for more; ``remove`` unmounts (the loop device goes with the
mount: ``-o loop`` sets autoclear), deletes the image and the mount point. Unmounted, the mount
point is an empty directory owned by root with mode 0: a container started on it by mistake
cannot write at all, rather than write to the host's disk without a cap.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from clawhq.errors import EngineError
from clawhq.runtime.base import DiskUsage

log = logging.getLogger(__name__)

#: Where Debian keeps the tools (not on every service's PATH).
TOOL_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"]
)
NEEDED_TOOLS = ("mkfs.ext4", "mount", "umount")
MOUNT_OPTIONS = "loop,nodev,nosuid,discard"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}$")
COMMAND_TIMEOUT = 120


def usage_of(path: Path) -> DiskUsage:
    found = os.statvfs(path)
    size = found.f_blocks * found.f_frsize
    return DiskUsage(
        used_bytes=(found.f_blocks - found.f_bfree) * found.f_frsize,
        size_bytes=size,
        free_bytes=found.f_bavail * found.f_frsize,
    )


def remote_engine(base_url: str | None) -> str:
    """Why disks made here would not reach the engine ("" when it runs on this host)."""
    url = base_url or os.environ.get("DOCKER_HOST", "")
    if url and not url.startswith("unix://"):
        return f"the engine is not on ClawHQ's host ({url}): its disks are made where it runs"
    return ""


def mounted_at(path: Path) -> str | None:
    """The source (``/dev/loopN``) of what is mounted at ``path``, or ``None``."""
    wanted = str(path)
    try:
        table = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return None
    found = None
    for line in table.splitlines():
        before, _, after = line.partition(" - ")
        fields = before.split()
        if len(fields) >= 5 and _unescape(fields[4]) == wanted:
            found = ([*after.split(), "", ""])[1]  # the last mount there wins
    return found


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


#: Where the disks live unless told (``CLAWHQ_DISK_DIR``).
DEFAULT_ROOT = Path("/var/lib/clawhq/disks")


class HostDisks:
    """The disks under ``root``."""

    def __init__(self, root: Path = DEFAULT_ROOT) -> None:
        self.root = root
        self._support: str | bool | None = False  # False: not checked yet

    # -- what the host can do ------------------------------------------------------------

    def support(self) -> str | None:
        """``None`` when this host can make capped disks, else why not (checked once)."""
        if self._support is False:
            self._support = self._check_support()
        return self._support if isinstance(self._support, str) else None

    @staticmethod
    def _check_support() -> str | None:
        if os.geteuid() != 0:
            return "ClawHQ does not run as root (loop mounts need it)"
        if not Path("/dev/loop-control").exists():
            return "the host has no loop devices (/dev/loop-control is missing)"
        missing = [tool for tool in NEEDED_TOOLS if shutil.which(tool, path=TOOL_PATH) is None]
        if missing:
            return f"{', '.join(missing)} not installed (Debian: apt-get install e2fsprogs mount)"
        return None

    # -- paths ---------------------------------------------------------------------------

    def mount_point(self, name: str) -> Path:
        if not _SAFE_NAME.match(name):
            raise EngineError(f"refusing a workspace disk named {name!r}")
        return self.root / name

    @staticmethod
    def image_of(mount_point: Path) -> Path:
        return mount_point.with_name(mount_point.name + ".img")

    @classmethod
    def is_disk(cls, mount_point: Path) -> bool:
        """Whether ``mount_point`` is a disk's: its image next to it, or a mount on it."""
        return cls.image_of(mount_point).exists() or mounted_at(mount_point) is not None

    # -- the disk's life -----------------------------------------------------------------

    def ensure(self, name: str, size: int, owner: str) -> Path:
        """The disk ``name`` of at least ``size`` bytes, mounted; return its mount point.
        A new disk's root folder belongs to ``owner`` (``uid:gid``), the container's user."""
        point = self.mount_point(name)
        with self._locked():
            image = self.image_of(point)
            if not image.exists():
                self._make(image, size, owner)
            self._prepare_point(point)
            if mounted_at(point) is None:
                self._mount(image, point)
            current = image.stat().st_size
            if size > current:
                self._grow(image, point, size)
            elif size < current:
                log.warning(
                    "workspace disk %s stays at %d bytes: shrinking (to %d) is not supported",
                    name,
                    current,
                    size,
                )
        return point

    def mount(self, point: Path) -> None:
        """Mount an existing disk again (after a reboot); nothing to do when mounted."""
        with self._locked():
            image = self.image_of(point)
            if mounted_at(point) is not None:
                return
            if not image.exists():
                raise EngineError(
                    f"the workspace disk image {image} is missing; the workspace cannot be "
                    "mounted (remove the volume to start afresh)"
                )
            self._prepare_point(point)
            self._mount(image, point)

    def remove(self, point: Path) -> None:
        """Unmount the disk (its loop device goes too), delete its image and mount point."""
        with self._locked():
            while mounted_at(point) is not None:
                self._run("umount", str(point))
            image = self.image_of(point)
            for leftover in (image, image.with_name(image.name + ".part")):
                leftover.unlink(missing_ok=True)
            with contextlib.suppress(FileNotFoundError):
                point.rmdir()

    def usage(self, point: Path) -> DiskUsage | None:
        if mounted_at(point) is None:
            return None
        return usage_of(point)

    # -- steps ---------------------------------------------------------------------------

    def _make(self, image: Path, size: int, owner: str) -> None:
        part = image.with_name(image.name + ".part")
        part.unlink(missing_ok=True)  # an earlier attempt that failed half-way
        try:
            with part.open("wb") as handle:
                handle.truncate(size)
            extended = f"root_owner={owner},lazy_itable_init=1,lazy_journal_init=1"
            self._run("mkfs.ext4", "-q", "-F", "-m", "0", "-E", extended, str(part))
            part.rename(image)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        log.info("made workspace disk %s (%d bytes)", image, size)

    def _prepare_point(self, point: Path) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        if mounted_at(point) is None:
            point.mkdir(mode=0o000, exist_ok=True)
            os.chmod(point, 0o000)  # unmounted, nobody but root writes here
            os.chown(point, 0, 0)

    def _mount(self, image: Path, point: Path) -> None:
        self._run("mount", "-o", MOUNT_OPTIONS, str(image), str(point))

    def _grow(self, image: Path, point: Path, size: int) -> None:
        """Grow offline (unmount, grow the image, check, resize, mount again): it needs no
        ``CAP_SYS_RESOURCE``, unlike an online resize. A disk still in use keeps its size."""
        try:
            self._run("umount", str(point))
        except EngineError as exc:
            log.warning("workspace disk %s stays at its size: %s", image.name, exc.message)
            return
        try:
            with image.open("r+b") as handle:
                handle.truncate(size)
            self._run("e2fsck", "-f", "-p", str(image), ok=(0, 1))  # 1: fixed, fine
            self._run("resize2fs", "-f", str(image))
        finally:
            self._mount(image, point)
        log.info("grew workspace disk %s to %d bytes", image.name, size)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One change to the disks at a time on this host, across processes."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        with (self.root / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @staticmethod
    def _run(*command: str, ok: tuple[int, ...] = (0,)) -> None:
        tool = shutil.which(command[0], path=TOOL_PATH) or command[0]
        try:
            done = subprocess.run(  # noqa: S603 (fixed tools, paths we made)
                [tool, *command[1:]],
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EngineError(f"workspace disk: {command[0]} failed ({exc})") from None
        if done.returncode not in ok:
            detail = (done.stderr or done.stdout).strip()[-500:]
            raise EngineError(
                f"workspace disk: {' '.join(command)} failed (exit {done.returncode}): {detail}"
            )
