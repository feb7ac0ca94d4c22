"""``/login``: where ClawHQ sends a browser that needs a session (an agent's Control UI, say).
The dashboard's sign-in page is at ``/`` (clawhq/web/); this path takes the browser there,
``next`` and all, so links made before the dashboard keep working."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Query
from fastapi.responses import RedirectResponse

router = APIRouter(tags=["agent access"])


@router.get("/login", include_in_schema=False)
async def login_page(
    next: Annotated[str | None, Query(max_length=2048)] = None,
) -> RedirectResponse:
    """The sign-in page; after signing in the browser goes on to ``next`` (a local path)."""
    target = f"/?next={quote(next, safe='/')}" if next else "/"
    return RedirectResponse(target, status_code=303, headers={"Cache-Control": "no-store"})
