"""Digests of what an image is made from, and the stamps that skip rebuilding it unchanged."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from clawhq.runtime.docker_engine import DockerRuntime


def digest(*parts: str | bytes) -> str:
    """A short sha256 of ``parts``, each kept apart from the next."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def tree_digest(folder: Path) -> str:
    """A digest of every file under ``folder``: its relative path and its bytes."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return digest(*(x for p in files for x in (str(p.relative_to(folder)), p.read_bytes())))


@dataclass(frozen=True)
class Stamps:
    """What was built from which inputs: ``{tag: {"inputs": digest, "image": id}}``."""

    path: Path

    def _load(self) -> dict[str, dict[str, str]]:
        try:
            return dict(json.loads(self.path.read_text()))
        except (OSError, ValueError):
            return {}

    def current(self, runtime: DockerRuntime, tag: str, inputs: str) -> str | None:
        """The image id if ``tag`` was built from ``inputs`` and is still on the engine."""
        entry = self._load().get(tag)
        if not entry or entry.get("inputs") != inputs:
            return None
        image = entry.get("image", "")
        if image and runtime.image_exists(tag) and runtime.image_exists(image):
            return image
        return None

    def record(self, tag: str, inputs: str, image: str) -> None:
        data = self._load()
        data[tag] = {"inputs": inputs, "image": image}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial")
        partial.write_text(json.dumps(data, indent=2))
        partial.rename(self.path)
