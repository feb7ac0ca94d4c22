"""``/ui/static/<digest>/<name>``: the dashboard's CSS, script and vendored htmx."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import Response

from clawhq.errors import NotFound
from clawhq.web import assets
from clawhq.web.render import PageRoute

router = APIRouter(route_class=PageRoute, include_in_schema=False)

Digest = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")]
Name = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._/-]+$")]


@router.get(assets.PREFIX + "/{digest}/{name:path}")
async def asset(digest: Digest, name: Name) -> Response:
    found = assets.find(name)
    if found is None:
        raise NotFound(f"no such file: {name}", code="not_found")
    return Response(
        found.body,
        media_type=found.media_type,
        headers={
            "Cache-Control": assets.cache_control(found, digest),
            "ETag": f'"{found.digest}"',
            "X-Content-Type-Options": "nosniff",
        },
    )
