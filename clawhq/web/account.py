"""The caller's API tokens and model usage."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from clawhq.api.audit import Audit
from clawhq.api.deps import AuthAttempt, Context, DbSession, RateLimits, Reads, Tokens
from clawhq.api.routes import agents as agent_routes
from clawhq.api.routes import auth as auth_routes
from clawhq.api.routes import usage as usage_routes
from clawhq.api.routes.auth import TokenId
from clawhq.api.schemas import Login
from clawhq.db.models import User
from clawhq.errors import ClawHQError
from clawhq.web import charts, render
from clawhq.web.deps import Form, WebUser, one
from clawhq.web.forms import FormError, validate
from clawhq.web.render import PageRoute

router = APIRouter(route_class=PageRoute, include_in_schema=False)


def _tokens_page(
    request: Request,
    user: User,
    reads: Reads,
    *,
    issued: str | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response:
    listed = auth_routes.list_tokens(user, request, reads).tokens
    return render.html(request, "tokens.html", status, tokens=listed, issued=issued, error=error)


@router.get("/ui/tokens")
def tokens(request: Request, user: WebUser, reads: Reads) -> Response:
    return _tokens_page(request, user, reads)


@router.post("/ui/tokens", dependencies=[AuthAttempt])
def create_token(
    request: Request,
    user: WebUser,
    values: Form,
    session: DbSession,
    reads: Reads,
    context: Context,
    audit: Audit,
    limits: RateLimits,
) -> Response:
    """A new API token is a login with the account's password (``POST /api/auth/login``):
    shown once, here, and never again."""
    try:
        body = validate(Login, {"email": user.email, "password": one(values, "password")})
        issued = auth_routes.login(body, request, Response(), session, context, audit, limits)
    except FormError as problem:
        return _tokens_page(request, user, reads, error=problem.summary, status=422)
    except ClawHQError as exc:
        return _tokens_page(request, user, reads, error=exc.message, status=exc.status)
    token = getattr(issued, "token", None)
    return _tokens_page(request, user, reads, issued=token, status=201)


@router.post("/ui/tokens/{token_id}/revoke")
def revoke_token(
    token_id: TokenId,
    request: Request,
    user: WebUser,
    session: DbSession,
    reads: Reads,
    audit: Audit,
    tokens: Tokens,
) -> Response:
    current = {t.id for t in auth_routes.list_tokens(user, request, reads).tokens if t.current}
    auth_routes.revoke_token(token_id, user, session, audit, tokens)
    # Revoking this very session signs the browser out.
    return render.redirect("/" if token_id in current else "/ui/tokens")


@router.get("/ui/usage")
def usage(request: Request, user: WebUser, reads: Reads, context: Context) -> Response:
    """This month: the budget, and each agent's tokens per day."""
    mine = usage_routes.my_usage(user, reads)
    listed = agent_routes.list_agents(user, reads, context).agents
    charts_by_agent = []
    for agent in listed:
        report = usage_routes.agent_usage(agent.id, user, reads, group_by="day")
        charts_by_agent.append((agent, charts.daily(report.groups, report.from_, report.to)))
    return render.html(
        request,
        "usage.html",
        usage=mine,
        budget=charts.budget(mine.budget.used, mine.budget.monthly_tokens),
        charts=charts_by_agent,
    )
