"""The health probe treats what an agent answers as hostile input (issue: bounded probes)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from clawhq.controller import health

pytestmark = pytest.mark.timeout(30)


def serve(answer: Callable[[socket.socket], None]) -> Iterator[str]:
    """A one-connection-at-a-time HTTP stand-in on loopback that runs ``answer`` per client."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.recv(4096)
                # The probe hangs up on a hostile answer: exactly what it should do.
                with contextlib.suppress(OSError):
                    answer(conn)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/healthz"
    stop.set()
    thread.join(timeout=2)
    server.close()


HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"


@pytest.fixture
def healthy() -> Iterator[str]:
    body = b'{"ok": true}'
    yield from serve(lambda c: c.sendall(HEAD + b"Content-Length: 12\r\n\r\n" + body))


def test_a_short_json_ok_is_healthy(healthy: str) -> None:
    assert health.http_probe(healthy) is True


def test_a_dripping_answer_is_cut_at_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "DEADLINE_SECONDS", 0.5)
    sent = {"bytes": 0}

    def drip(conn: socket.socket) -> None:
        conn.sendall(HEAD + b"Content-Length: 100000\r\n\r\n{")
        while True:  # one byte at a time, each well within the read timeout
            time.sleep(0.1)
            conn.sendall(b" ")
            sent["bytes"] += 1

    for url in serve(drip):
        assert health.http_probe(url) is False
    # It gave up long before the 100,000 promised bytes.
    assert sent["bytes"] < 1000


def test_an_endless_body_is_not_read_past_the_cap() -> None:
    sent = {"bytes": 0}

    def flood(conn: socket.socket) -> None:
        conn.sendall(HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 8192
        while True:
            conn.sendall(b"2000\r\n" + chunk + b"\r\n")
            sent["bytes"] += len(chunk)

    for url in serve(flood):
        assert health.http_probe(url) is False
    # Socket buffers hold some; the probe itself read a few KiB and hung up.
    assert sent["bytes"] < 50 * 1024 * 1024


def test_a_catch_all_page_or_a_json_non_object_is_not_healthy() -> None:
    for body in (b"<html>control ui</html>", b"[true]", b'{"ok": "yes"}'):
        length = str(len(body)).encode()

        def page(conn: socket.socket, body: bytes = body, length: bytes = length) -> None:
            conn.sendall(HEAD + b"Content-Length: " + length + b"\r\n\r\n" + body)

        for url in serve(page):
            assert health.http_probe(url) is False
