"""Every error the API returns is ``application/problem+json`` (RFC 9457) with a stable code."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException

from clawhq.api.schemas import Problem
from clawhq.errors import ClawHQError

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def problem(
    request: Request,
    status: int,
    code: str,
    detail: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"urn:clawhq:error:{code}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
        "instance": request.url.path,
        **extra,
    }
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI declarations of the error answers a route gives, as problem+json bodies."""
    schema = Problem.model_json_schema()
    return {
        status: {
            "description": HTTPStatus(status).phrase,
            "content": {MEDIA_TYPE: {"schema": schema}},
        }
        for status in statuses
    }


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or str(loc[0] if loc else "request")


async def _clawhq_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ClawHQError)
    if exc.status >= 500:
        log.warning("%s %s -> %s: %s", request.method, request.url.path, exc.code, exc.message)
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
    return problem(request, exc.status, exc.code, exc.message, headers, **exc.details)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # The submitted values are left out on purpose: they may hold API keys or passwords.
    errors = [
        {
            "field": _field(tuple(e.get("loc", ()))),
            "message": str(e.get("msg", "invalid")).removeprefix("Value error, "),
        }
        for e in exc.errors()
    ]
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return problem(request, 422, "validation_error", f"invalid request: {summary}", errors=errors)


def _leaf_routes(routes: Iterable[Any]) -> Iterator[Any]:
    for route in routes:
        included = getattr(route, "effective_route_contexts", None)  # FastAPI's included routers
        if included is not None:
            yield from (context.original_route for context in included())
        else:
            yield route


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves on this path (Starlette names only the first route's)."""
    methods: set[str] = set()
    for route in _leaf_routes(request.app.routes):
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(request.url.path):
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    headers = dict(exc.headers or {})
    if exc.status_code == 405 and (allowed := _allowed_methods(request)):
        headers["Allow"] = ", ".join(allowed)  # RFC 9110: every method the resource supports
    return problem(request, exc.status_code, code, str(exc.detail), headers)


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("database error on %s %s: %s", request.method, request.url.path, type(exc).__name__)
    return problem(
        request, 503, "database_unavailable", "the database is unavailable; try again shortly"
    )


async def _bad_data(request: Request, exc: Exception) -> JSONResponse:
    # What the database refuses to store or compare (a NUL byte in text, say) is bad input.
    log.warning("database refused input on %s %s", request.method, request.url.path)
    return problem(
        request, 400, "invalid_input", "the request holds characters that cannot be used"
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem(request, 500, "internal_error", "internal error; it has been logged")


def install(app: FastAPI) -> None:
    app.add_exception_handler(ClawHQError, _clawhq_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    # Connection-level failures only; a broken query is a bug and stays a 500.
    app.add_exception_handler(OperationalError, _database_error)
    app.add_exception_handler(InterfaceError, _database_error)
    app.add_exception_handler(PoolTimeout, _database_error)  # every connection busy
    app.add_exception_handler(DataError, _bad_data)
    app.add_exception_handler(Exception, _unexpected)
