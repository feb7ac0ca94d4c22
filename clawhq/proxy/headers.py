"""What crosses the proxy, in each direction. Pure.

Towards the agent: the browser's own headers, minus ClawHQ's credentials (the agent must never
see its owner's session or API token), minus anything a client could use to pass for the
proxy (identity and forwarding headers are ClawHQ's to write, never the client's). Back to
the browser (:func:`agent_page_headers`): only the gateway's headers that describe the
answer — none that acts on the origin it is served on (``Set-Cookie``, ``Service-Worker-Allowed``,
``Clear-Site-Data``, ``Refresh``, CORS, HSTS…), and under ClawHQ's own origin (the chat API)
``Content-Security-Policy: sandbox`` besides. A provider's answer to an agent (the LLM
gateway: no browser involved) keeps its headers but hop-by-hop ones and cookies.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

#: The header carrying the secret the gateway trusts (its ``trustedProxy.userHeader``).
IDENTITY_HEADER = "x-clawhq-identity"
#: ClawHQ's own cookies (``clawhq.api.sessions``): never forwarded to an agent.
CLAWHQ_COOKIE_PREFIX = "clawhq_"
#: Forwarded for a client the gateway could not attribute (loopback, or ClawHQ's own address):
#: it refuses such requests (``proxy_attribution_required``), and uses the address only as a
#: rate-limit key and in its logs. TEST-NET-1, so it never names a real host.
UNATTRIBUTED_CLIENT = "192.0.2.1"

Header = tuple[str, str]

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
#: Request headers the proxy writes itself, or that only a proxy may send.
PROXY_WRITTEN = frozenset(
    {
        "host",
        "authorization",
        "forwarded",
        "x-real-ip",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-forwarded-user",
        "content-length",
    }
)
#: WebSocket handshake headers the client library makes for the upstream connection itself.
WEBSOCKET_HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
        "origin",
    }
)
RESPONSE_DROPPED = HOP_BY_HOP | {"set-cookie"}
#: What an agent's answer may tell a browser: how to read and cache it, and the page's own
#: protections. Nothing else passes (an allowlist: a header invented tomorrow is dropped).
PAGE_HEADERS = frozenset(
    {
        "accept-ranges",
        "cache-control",
        "content-disposition",
        "content-encoding",
        "content-language",
        "content-length",
        "content-range",
        "content-security-policy",
        "content-type",
        "cross-origin-embedder-policy",
        "cross-origin-opener-policy",
        "cross-origin-resource-policy",
        "date",
        "etag",
        "expires",
        "last-modified",
        "location",
        "permissions-policy",
        "referrer-policy",
        "retry-after",
        "vary",
        "www-authenticate",
        "x-content-type-options",
        "x-frame-options",
        "x-request-id",
    }
)
#: Under ClawHQ's own origin, whatever an agent serves is a document with no origin at all.
SANDBOX = ("content-security-policy", "sandbox")


def _listed_in_connection(headers: Iterable[tuple[str, str]]) -> set[str]:
    named: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            named |= {token.strip().lower() for token in value.split(",") if token.strip()}
    return named


def without_clawhq_cookies(value: str) -> str:
    """A ``Cookie`` header with ClawHQ's own cookies taken out."""
    kept = [
        part.strip()
        for part in value.split(";")
        if part.strip() and not part.strip().lower().startswith(CLAWHQ_COOKIE_PREFIX)
    ]
    return "; ".join(kept)


def forwarded_for(client: str, proxy_address: str = "") -> str:
    """The client address to forward: the real one where the gateway can attribute it."""
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return UNATTRIBUTED_CLIENT
    if address.is_loopback or address.is_unspecified or str(address) == proxy_address:
        return UNATTRIBUTED_CLIENT
    return str(address)


def upstream_request_headers(
    incoming: Iterable[tuple[str, str]],
    *,
    identity: str,
    client_address: str,
    proto: str,
    host: str,
    websocket: bool = False,
    proxy_address: str = "",
) -> list[tuple[str, str]]:
    """The headers to send the gateway for a request that arrived with ``incoming``."""
    incoming = list(incoming)
    dropped = HOP_BY_HOP | PROXY_WRITTEN | _listed_in_connection(incoming)
    if websocket:
        dropped |= WEBSOCKET_HANDSHAKE
    out: list[tuple[str, str]] = []
    for name, value in incoming:
        lower = name.lower()
        if lower in dropped or lower.startswith("x-clawhq-"):
            continue
        if lower == "cookie":
            value = without_clawhq_cookies(value)
            if not value:
                continue
        out.append((lower, value))
    out += [
        (IDENTITY_HEADER, identity),
        ("x-forwarded-for", forwarded_for(client_address, proxy_address)),
        ("x-forwarded-proto", proto),
        ("x-forwarded-host", host),
    ]
    return out


def agent_page_headers(
    upstream: Iterable[tuple[str, str]], *, clawhq_origin: bool = False
) -> list[tuple[str, str]]:
    """The gateway's response headers that may reach a browser (``clawhq_origin``: the answer
    is served under ClawHQ's own origin, so it is sandboxed too)."""
    kept = [(name, value) for name, value in upstream if name.lower() in PAGE_HEADERS]
    return [*kept, SANDBOX] if clawhq_origin else kept


def downstream_response_headers(upstream: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """A provider's response headers as they go back to the agent (the LLM gateway)."""
    upstream = list(upstream)
    dropped = RESPONSE_DROPPED | _listed_in_connection(upstream)
    return [(name, value) for name, value in upstream if name.lower() not in dropped]
