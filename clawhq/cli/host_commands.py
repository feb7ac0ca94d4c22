"""Running the build host's own tools (debootstrap, chroot, npm) for the image builders."""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from clawhq.errors import ConfigError

log = logging.getLogger(__name__)

COMMAND_TIMEOUT = 1800


def run_command(args: Sequence[str | Path], what: str, env: dict[str, str] | None = None) -> str:
    """Run a command; a failure is a ConfigError with the command's last output lines."""
    log.debug("running %s", " ".join(map(str, args)))
    try:
        done = subprocess.run(  # noqa: S603 - fixed argument lists, no shell
            [str(a) for a in args],
            env=env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise ConfigError(f"{what}: {args[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise ConfigError(f"{what}: no result within {COMMAND_TIMEOUT} s") from None
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise ConfigError(f"{what} failed (exit code {done.returncode}):\n{tail}")
    return done.stdout


def require_tool(tool: str, package: str) -> str:
    """The path of ``tool``; a ConfigError naming the Debian ``package`` if it is missing."""
    found = shutil.which(tool)
    if not found:
        raise ConfigError(f"{tool} is not installed: apt-get install -y {package}")
    return found
