"""The dashboard's static files, served by ClawHQ itself under a digest of their content.

``/ui/static/<digest>/<name>``: the digest changes with the file, so a browser may keep each
for a year (``immutable``); an old digest (a page loaded before an upgrade) still gets the
current file, revalidated every time.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

STATIC = Path(__file__).parent / "static"
PREFIX = "/ui/static"
_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}
YEAR = 365 * 24 * 3600


@dataclass(frozen=True)
class Asset:
    name: str
    body: bytes
    media_type: str
    digest: str


def _load() -> dict[str, Asset]:
    found: dict[str, Asset] = {}
    for path in sorted(STATIC.rglob("*")):
        media_type = _TYPES.get(path.suffix)
        if not path.is_file() or media_type is None:
            continue
        name = path.relative_to(STATIC).as_posix()
        body = path.read_bytes()
        found[name] = Asset(name, body, media_type, hashlib.sha256(body).hexdigest()[:16])
    return found


ASSETS = _load()


def url(name: str) -> str:
    """Where a page links ``name`` (a path under static/)."""
    return f"{PREFIX}/{ASSETS[name].digest}/{name}"


def find(name: str) -> Asset | None:
    return ASSETS.get(name)


def cache_control(asset: Asset, digest: str) -> str:
    if digest == asset.digest:
        return f"public, max-age={YEAR}, immutable"
    return "no-cache"
