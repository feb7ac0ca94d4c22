"""``GET /health``: is ClawHQ itself able to work (database and engine reachable)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from clawhq.api.deps import Context
from clawhq.errors import ClawHQError

router = APIRouter(tags=["health"])


@router.get(
    "/health",
    responses={
        503: {
            "description": "The database or the engine is unreachable, or (in production) the "
            "agent firewall is not installed (same body)."
        }
    },
)
def health(context: Context) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        with context.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any failure means "not ok"; the type is enough for the operator
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        context.runtime.ping()
        checks["engine"] = "ok"
    except ClawHQError as exc:
        checks["engine"] = f"error: {exc.code}"
    healthy = all(v == "ok" for v in checks.values())
    # In production no agent starts without the firewall rules: that is not healthy.
    parts = context.parts
    checks["firewall"] = parts.firewall
    healthy = healthy and parts.firewall_allows_agents()
    return JSONResponse({"ok": healthy, **checks}, status_code=200 if healthy else 503)
