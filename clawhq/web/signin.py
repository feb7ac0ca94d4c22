"""Sign up, sign in and sign out: the API's own register, login and logout, for a browser
session (the HttpOnly cookie of ``POST /api/auth/login`` with ``cookie: true``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from clawhq.api.audit import Audit
from clawhq.api.deps import AuthAttempt, Context, DbSession, RateLimits, Registration, Tokens
from clawhq.api.routes import auth as auth_routes
from clawhq.api.schemas import Credentials, Login
from clawhq.credentials import hash_token
from clawhq.errors import ClawHQError
from clawhq.services import users
from clawhq.web import render
from clawhq.web.deps import Form, WebUser, one, require_own_origin
from clawhq.web.forms import FormError, validate
from clawhq.web.render import PageRoute

router = APIRouter(route_class=PageRoute, include_in_schema=False)


def _with_cookies(target: Response, source: Response) -> Response:
    for name, value in source.raw_headers:
        if name == b"set-cookie":
            target.raw_headers.append((name, value))
    return target


def _page(
    request: Request, template: str, values: dict[str, list[str]], error: str, status: int
) -> Response:
    return render.html(
        request,
        template,
        status,
        email=one(values, "email"),
        next=render.local_path(one(values, "next"), ""),
        error=error,
    )


def _sign_in(
    request: Request,
    email: str,
    password: str,
    session: DbSession,
    context: Context,
    audit: Audit,
    limits: RateLimits,
    target: str,
) -> Response:
    """``POST /api/auth/login`` with ``cookie: true``; the browser goes on to ``target``.

    An agent's pages live on the agent's own origin, and a browser holds every redirect that
    follows a form post to the page's ``form-action 'self'``: the way to an agent is a page
    of ClawHQ's that navigates there afresh, not a redirect."""
    body = validate(Login, {"email": email, "password": password, "cookie": True})
    issued = Response()
    auth_routes.login(body, request, issued, session, context, audit, limits)
    if target.startswith("/agents/"):
        onward: Response = render.html(request, "handover.html", target=target)
    else:
        onward = render.redirect(target)
    return _with_cookies(onward, issued)


@router.post("/ui/signin", dependencies=[AuthAttempt])
def sign_in(
    request: Request,
    values: Form,
    session: DbSession,
    context: Context,
    audit: Audit,
    limits: RateLimits,
) -> Response:
    require_own_origin(request)
    target = render.local_path(one(values, "next"))
    try:
        email, password = one(values, "email"), one(values, "password")
        return _sign_in(request, email, password, session, context, audit, limits, target)
    except FormError as problem:
        return _page(request, "signin.html", values, problem.summary, 422)
    except ClawHQError as exc:
        return _page(request, "signin.html", values, exc.message, exc.status)


@router.get("/ui/signup")
def sign_up_page(request: Request) -> Response:
    return render.html(request, "signup.html", email="", next="")


@router.post("/ui/signup", dependencies=[AuthAttempt, Registration])
def sign_up(
    request: Request,
    values: Form,
    session: DbSession,
    context: Context,
    audit: Audit,
    limits: RateLimits,
) -> Response:
    """``POST /api/auth/register``, then a browser session: the API token registering
    issues is revoked at once (the browser never sees it; the session cookie is its key)."""
    require_own_origin(request)
    email, password = one(values, "email"), one(values, "password")
    try:
        if password != one(values, "password2"):
            raise FormError("the two passwords differ", {"password2": "the passwords differ"})
        body = validate(Credentials, {"email": email, "password": password})
        registered = auth_routes.register(body, session, context, audit)
        users.revoke_token_hash(session, hash_token(registered.token))
        return _sign_in(request, email, password, session, context, audit, limits, "/")
    except FormError as problem:
        return _page(request, "signup.html", values, problem.summary, 422)
    except ClawHQError as exc:
        return _page(request, "signup.html", values, exc.message, exc.status)


@router.post("/ui/signout")
def sign_out(
    request: Request,
    user: WebUser,
    session: DbSession,
    context: Context,
    audit: Audit,
    tokens: Tokens,
) -> Response:
    """``POST /api/auth/logout``: this session's token is revoked and its cookies cleared."""
    ended = auth_routes.logout(user, request, session, context, audit, tokens)
    return _with_cookies(render.redirect("/"), ended)
