"""Pages and fragments from Jinja2 templates, under one strict Content-Security-Policy.

Every answer of the dashboard goes through :class:`PageRoute`, which turns any ClawHQ error
into its human message (a page, or a fragment for htmx), sends a signed-out browser to the
sign-in page, and never shows a stack trace.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.requests import Request
from starlette.responses import Response

from clawhq.api import redirects, sessions
from clawhq.errors import ClawHQError, Unauthorized
from clawhq.web import assets, present

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"

#: Scripts, styles, images and connections from ClawHQ itself only: no inline script or style
#: (htmx is configured by a meta tag and a static file), no framing, forms post here only.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    # Pages show a user's own data: never kept by a shared cache, nor restored after sign-out.
    "Cache-Control": "no-store",
}


def _when(value: datetime | None) -> str:
    """A time as people read it, in UTC (the page does not guess the reader's zone)."""
    if value is None:
        return "never"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _number(value: int | float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,}"


def _size(value: int | float | None) -> str:
    if value is None:
        return "—"
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if amount < 1024 or unit == "TiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} TiB"  # pragma: no cover - the loop returns


environment = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
environment.filters["when"] = _when
environment.filters["number"] = _number
environment.filters["size"] = _size
environment.globals["static"] = assets.url
environment.globals["condition"] = present.condition
environment.globals["can"] = present.can


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def csrf_of(request: Request) -> str:
    """The CSRF value of the caller's browser session ("" without one), for htmx's header."""
    token = request.cookies.get(sessions.SESSION_COOKIE)
    return sessions.csrf_token(token) if token else ""


def html(
    request: Request,
    template: str,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    **values: Any,
) -> HTMLResponse:
    """``template`` rendered with ``values``, the caller's CSRF value and the path."""
    values.setdefault("user", getattr(request.state, "web_user", None))
    values.setdefault("error", None)
    values.setdefault("notice", None)
    text = environment.get_template(template).render(
        request=request, csrf=csrf_of(request), path=request.url.path, **values
    )
    return HTMLResponse(text, status_code=status, headers={**SECURITY_HEADERS, **(headers or {})})


def fragment(template: str, **values: Any) -> str:
    """A template rendered on its own (an SSE message, say)."""
    return environment.get_template(template).render(**values)


def redirect(location: str) -> RedirectResponse:
    """303: after a form post the browser loads ``location`` with GET."""
    return RedirectResponse(location, status_code=303, headers=SECURITY_HEADERS)


def local_path(value: str | None, default: str = "/") -> str:
    """``value`` when a browser would read it as a path on this origin (clawhq.api.redirects)."""
    return redirects.local_path(value, default)


def _navigation(request: Request) -> bool:
    """A browser loading a page (not htmx, not a script, not a form post)."""
    return (
        request.method == "GET"
        and not is_htmx(request)
        and "text/html" in request.headers.get("accept", "")
    )


def error_response(request: Request, status: int, message: str, **extra: str) -> HTMLResponse:
    """The human message of an error: a fragment for htmx, else a page of its own."""
    template = "fragments/error.html" if is_htmx(request) else "error.html"
    headers = {}
    if retry := extra.get("retry_after"):
        headers["Retry-After"] = retry
    if is_htmx(request):
        headers["HX-Reswap"] = "innerHTML"
    return html(request, template, status, headers, message=message, status_code=status)


def _signed_out(request: Request, exc: Unauthorized) -> Response:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if _navigation(request):
        return redirect(f"/?next={quote(here)}")
    response = error_response(request, 401, f"{exc.message} (sign in again)")
    if is_htmx(request):
        current = request.headers.get("hx-current-url", "")
        page = current.split(request.url.netloc, 1)[-1] if current else "/"
        response.headers["HX-Redirect"] = f"/?next={quote(local_path(page))}"
    return response


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path")]
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{'.'.join(loc) or 'request'}: {message}")
    return "invalid request: " + "; ".join(parts)


_DATABASE_ERRORS = (OperationalError, InterfaceError, PoolTimeout)


class PageRoute(APIRoute):
    """A dashboard route: errors are shown as their human message, in HTML."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page(request: Request) -> Response:
            try:
                return await handler(request)
            except Unauthorized as exc:
                return _signed_out(request, exc)
            except ClawHQError as exc:
                retry = {"retry_after": str(exc.retry_after)} if exc.retry_after else {}
                return error_response(request, exc.status, exc.message, **retry)
            except RequestValidationError as exc:
                return error_response(request, 422, _validation_message(exc))
            except _DATABASE_ERRORS:
                log.error("database error on %s %s", request.method, request.url.path)
                return error_response(
                    request, 503, "the database is unavailable; try again shortly"
                )
            except Exception:
                log.exception("unhandled error on %s %s", request.method, request.url.path)
                return error_response(request, 500, "internal error; it has been logged")

        return page
