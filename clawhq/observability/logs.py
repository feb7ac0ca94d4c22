"""Structured logs: one JSON object a line, with the request, user and agent they are about.

The ids travel in context variables, set by the API's middleware and dependencies and by the
controller's background work, so every line logged while handling something carries them.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
user_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("user_id", default=None)
agent_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("agent_id", default=None)

_FIELDS = (("request_id", request_id), ("user_id", user_id), ("agent_id", agent_id))


@contextlib.contextmanager
def bound(**ids: str | None) -> Iterator[None]:
    """Attach ids (``agent_id=…``, ``user_id=…``) to every log line inside the block."""
    tokens = [(var, var.set(ids[name])) for name, var in _FIELDS if name in ids]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, var in _FIELDS:
            value = var.get()
            if value:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = " ".join(f"{name}={var.get()}" for name, var in _FIELDS if var.get())
        return f"{line} [{ids}]" if ids else line


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg,unused-ignore]
    """Writes to whatever ``sys.stderr`` is at the time (test runners swap it)."""

    @property  # type: ignore[override,unused-ignore]
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def configure(fmt: str = "json", level: int = logging.INFO) -> None:
    """Send all logs to stderr in ``json`` or ``text``."""
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("alembic").setLevel(max(level, logging.WARNING))
    # One line per health probe would drown everything else.
    logging.getLogger("httpx").setLevel(max(level, logging.WARNING))
    # Uvicorn's access log repeats what the request middleware logs, without the ids.
    logging.getLogger("uvicorn.access").disabled = True
