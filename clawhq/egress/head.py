"""The request head of an agent's proxy request: read within bounds, and what it asks for.

Only the request line and headers are read here (:data:`HEAD_LIMIT` bytes within
:data:`HEAD_SECONDS`); :func:`destination` says where it wants to go, :func:`token_of` who it
says it is, :func:`check_host` that a plain HTTP request's ``Host`` agrees with its target,
:func:`origin_request` what the destination is sent of it, and :func:`answer` writes a refusal.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
from dataclasses import dataclass
from urllib.parse import urlsplit

from clawhq.egress.policy import normal_host
from clawhq.errors import EgressRefused as Refusal

HEAD_LIMIT = 16 * 1024
HEAD_SECONDS = 10.0
_HOP_HEADERS = {"proxy-authorization", "proxy-connection", "connection", "keep-alive"}


@dataclass(frozen=True)
class Head:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name), None)


async def read_head(reader: asyncio.StreamReader) -> Head:
    """The request line and headers, within :data:`HEAD_LIMIT` bytes and :data:`HEAD_SECONDS`."""
    try:
        async with asyncio.timeout(HEAD_SECONDS):
            data = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise Refusal(431, "head_too_large", "request head too large") from None
    except (TimeoutError, asyncio.IncompleteReadError):
        raise Refusal(408, "no_request", "no complete request head in time") from None
    try:
        lines = data[:-4].decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if not name or name != name.strip() or not _:
                raise ValueError(line)
            headers.append((name, value.strip()))
    except ValueError:
        raise Refusal(400, "bad_request", "not an HTTP request") from None
    if not version.startswith("HTTP/1."):
        raise Refusal(400, "bad_request", "only HTTP/1.x is proxied")
    return Head(method.upper(), target, version, headers)


def token_of(head: Head) -> str | None:
    """The LLM token in ``Proxy-Authorization: Basic`` (the password; the user is ignored)."""
    value = head.header("proxy-authorization")
    if not value or value[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(value[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[2] or None


def destination(head: Head) -> tuple[str, int]:
    """``(host, port)`` the client asks for; :class:`Refusal` when it names none."""
    if head.method == "CONNECT":
        host, sep, port = head.target.rpartition(":")
        if not sep or not port.isdigit():
            raise Refusal(400, "bad_target", "CONNECT needs host:port")
    else:
        url = urlsplit(head.target)
        if url.scheme != "http" or not url.hostname:
            raise Refusal(400, "bad_target", "only http:// URLs are proxied (https: CONNECT)")
        try:
            host, port = url.hostname, str(url.port or 80)
        except ValueError:
            raise Refusal(400, "bad_target", "not a port") from None
    name = normal_host(host)
    if name is None:
        raise Refusal(400, "bad_target", "not a host")
    return name, int(port)


def check_host(head: Head, host: str, port: int) -> None:
    """A plain request's ``Host`` names its target's host (and port, if it gives one): the
    destination sees the same host the proxy checked. :class:`Refusal` if not."""
    values = [value for name, value in head.headers if name.lower() == "host"]
    if values and (len(values) > 1 or not _names(values[0], host, port)):
        raise Refusal(403, "host_mismatch", f"the Host header does not name {host}:{port}")


def _names(value: str, host: str, port: int) -> bool:
    if not value or any(c in value for c in "@/\\?#"):
        return False
    authority = urlsplit(f"//{value}")
    try:
        given = authority.port
    except ValueError:
        return False
    return normal_host(authority.hostname or "") == host and given in (None, port)


def origin_request(head: Head) -> bytes:
    """The request as the destination should see it: origin-form, no proxy headers, closing,
    with a ``Host`` (the target's, when the client sent none)."""
    url = urlsplit(head.target)
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    lines = [f"{head.method} {path} {head.version}"]
    if head.header("host") is None:
        name = url.hostname or ""
        name = f"[{name}]" if ":" in name else name
        lines.append(f"Host: {name}" + (f":{url.port}" if url.port is not None else ""))
    lines += [f"{k}: {v}" for k, v in head.headers if k.lower() not in _HOP_HEADERS]
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def answer(writer: asyncio.StreamWriter, refusal: Refusal) -> None:
    body = f"ClawHQ egress: {refusal.message}\n".encode()
    lines = [
        f"HTTP/1.1 {refusal.status} {refusal.reason}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        f"X-ClawHQ-Error: {refusal.code}",
        "Connection: close",
    ]
    if refusal.status == 407:
        lines.append('Proxy-Authenticate: Basic realm="clawhq"')
    with contextlib.suppress(Exception):
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await writer.drain()
