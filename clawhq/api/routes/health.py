"""``GET /health``: is ClawHQ itself able to work (database and engine reachable), and can
agents run as their plans say (firewall, workspace disk caps, egress proxy)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from clawhq.api.deps import Context
from clawhq.controller import readiness
from clawhq.errors import ClawHQError

router = APIRouter(tags=["health"])


@router.get(
    "/health",
    responses={
        503: {
            "description": "The database or the engine is unreachable, or (in production) "
            "agents cannot start as their plans say: the agent firewall is not installed, "
            "capped workspace disks cannot be made while a cap is configured (`disks`), or "
            "the egress proxy is not listening while a plan uses the allowlist policy "
            "(`egressProxy`). Same body."
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
    host = context.host
    checks["firewall"] = host.firewall.value
    healthy = healthy and context.networks.firewall_allows_agents()
    # Nor without its workspace cap, and allowlist agents reach nothing without the proxy.
    needs = readiness.plan_needs(context.read_sessions)
    ready = readiness.assess(context.settings, context.runtime, host.egress_proxy_text, needs)
    checks["disks"] = ready.disks
    checks["egressProxy"] = ready.egress_proxy
    checks["agentListener"] = host.agent_listener_text
    healthy = healthy and ready.ok
    return JSONResponse({"ok": healthy, **checks}, status_code=200 if healthy else 503)
