"""A stand-in for an agent's gateway: it answers on the address ClawHQ proxies to and says
what it received, so tests can see exactly what crossed the proxy."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


async def _echo(request: Request) -> Response:
    body = await request.body()
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "headers": dict(request.headers.items()),
            "bodyLength": len(body),
        }
    )


async def _chat(request: Request) -> Response:
    """An OpenAI-style chat endpoint: streamed (five chunks at once) or the echo."""
    body = await request.body()
    if b'"stream":true' not in body.replace(b" ", b""):
        return await _echo(request)

    async def chunks() -> AsyncIterator[bytes]:
        for word in ("Hello", " from", " the", " stand", "-in"):
            delta = json.dumps({"choices": [{"index": 0, "delta": {"content": word}}]})
            yield f"data: {delta}\n\n".encode()
        yield b"data: [DONE]\n\n"

    return StreamingResponse(chunks(), media_type="text/event-stream")


async def _ticks(request: Request) -> Response:
    """``n`` events ``every`` seconds apart, each with the time it was sent."""
    n = int(request.query_params.get("n", "10"))
    every = float(request.query_params.get("every", "0.1"))

    async def events() -> AsyncIterator[bytes]:
        for _ in range(n):
            yield f"data: {time.time()!r}\n\n".encode()
            await asyncio.sleep(every)

    return StreamingResponse(events(), media_type="text/event-stream")


async def _events(request: Request) -> Response:
    async def events() -> AsyncIterator[bytes]:
        for n in range(3):
            yield f"data: {n}\n\n".encode()
            await asyncio.sleep(0.05)

    return StreamingResponse(events(), media_type="text/event-stream")


async def _big(request: Request) -> Response:
    """Far more than any socket buffer holds: a client that does not read stalls it."""

    async def chunks() -> AsyncIterator[bytes]:
        block = b"x" * 65536
        for _ in range(2000):
            yield block

    return StreamingResponse(chunks(), media_type="application/octet-stream")


async def _slow(request: Request) -> Response:
    await asyncio.sleep(3)
    return JSONResponse({"ok": True})


async def _cookie(request: Request) -> Response:
    response = JSONResponse({"ok": True})
    response.set_cookie("clawhq_session", "planted-by-the-agent", path="/")
    response.headers["x-gateway"] = "stand-in"
    return response


#: What a hostile gateway answers with: every header that would act on the origin it is served on.
HOSTILE_HEADERS = {
    "Service-Worker-Allowed": "/",
    "Clear-Site-Data": '"cookies", "storage"',
    "Refresh": "0; url=https://evil.example/",
    "Set-Cookie": "clawhq_session=planted; Path=/",
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Credentials": "true",
    "Strict-Transport-Security": "max-age=63072000; includeSubDomains",
    "Link": '</sw.js>; rel="serviceworker"',
    "X-ClawHQ-Error": "forged",
}


async def _hostile(request: Request) -> Response:
    return JSONResponse({"path": request.url.path}, headers=HOSTILE_HEADERS)


async def _health(request: Request) -> Response:
    return JSONResponse({"ok": True, "status": "live"})


async def _socket(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_json({"headers": dict(websocket.headers.items())})
    with contextlib.suppress(Exception):
        while True:
            message = await websocket.receive_text()
            if message.startswith("big:"):
                await websocket.send_text("y" * int(message[4:]))
            else:
                await websocket.send_text(f"echo:{message}")


def app() -> Starlette:
    return Starlette(
        routes=[
            Route("/healthz", _health),
            Route("/v1/chat/completions", _chat, methods=["POST"]),
            Route("/v1/models", _echo),
            Route("/v1/hostile", _hostile),
            Route("/agents/{agent}/hostile", _hostile),
            Route("/agents/{agent}/events", _events),
            Route("/agents/{agent}/cookie", _cookie),
            Route("/agents/{agent}/big", _big),
            Route("/agents/{agent}/slow", _slow),
            Route("/agents/{agent}/ticks", _ticks),
            WebSocketRoute("/agents/{agent}/ws", _socket),
            WebSocketRoute("/agents/{agent}", _socket),
            Route(
                "/agents/{agent}/{rest:path}",
                _echo,
                methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            ),
        ]
    )


@contextlib.contextmanager
def serving(host: str, port: int, asgi: Any = None, **config: Any) -> Iterator[Any]:
    """Serve the stand-in (or ``asgi``) on ``host:port`` in a thread for the ``with`` block."""
    server = uvicorn.Server(
        uvicorn.Config(asgi or app(), host=host, port=port, log_level="warning", **config)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"stand-in gateway did not start on {host}:{port}")
        time.sleep(0.01)
    try:
        yield server
    finally:
        server.should_exit = True
        thread.join(timeout=10)


if __name__ == "__main__":  # python -m tests.standins.gateway HOST PORT (the proxy benchmarks)
    import sys

    host, port = sys.argv[1], int(sys.argv[2])
    uvicorn.run(app(), host=host, port=port, log_level="warning", access_log=False)
