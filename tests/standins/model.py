"""A stand-in LLM provider: an OpenAI-compatible chat endpoint with a canned answer and known
usage, plus a webhook sink for the agent's reporter. It records what it was sent (the key
included), so tests see exactly what an agent's gateway asked of its model."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class StandIn(BaseHTTPRequestHandler):
    """An OpenAI-compatible model (a canned answer with usage) and the reporter's webhook."""

    answer = "Hello from the stand-in."
    requests: list[dict[str, Any]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
        self.requests.append({"path": self.path, "auth": self.headers.get("authorization"), **body})
        if self.path == "/hook":
            return self.reply(202, {})
        if not self.path.endswith("/chat/completions"):
            return self.reply(404, {"error": {"message": "not served here"}})
        usage = {"prompt_tokens": 100, "completion_tokens": 5, "total_tokens": 105}
        base = {"id": "c1", "created": 1, "model": body.get("model")}
        message = {"role": "assistant", "content": self.answer}
        if not body.get("stream"):
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            return self.reply(
                200, {**base, "object": "chat.completion", "usage": usage, "choices": [choice]}
            )
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        chunk = {**base, "object": "chat.completion.chunk"}
        for extra in (
            {"choices": [{"index": 0, "delta": message, "finish_reason": None}]},
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": usage},
        ):
            self.wfile.write(f"data: {json.dumps({**chunk, **extra})}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")

    def reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextlib.contextmanager
def serving_model(host: str) -> Iterator[str]:
    """Serve the stand-in on ``host`` (an ephemeral port); yields its base URL."""
    StandIn.requests = []
    server = ThreadingHTTPServer((host, 0), StandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
