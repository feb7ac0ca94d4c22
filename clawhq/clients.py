"""Who a request comes from: the TCP peer, or the client a trusted reverse proxy names.

Behind a reverse proxy every connection comes from the proxy, so per-address limits and the
audit log would see one client. ``CLAWHQ_TRUSTED_PROXIES`` lists the proxies whose
``X-Forwarded-For`` is believed; from anyone else the header is ignored (any client can send
it). Each proxy appends the address it got the request from, so the list is read from the right:
the first address that is not itself a trusted proxy is the client. Whatever is to its left
was written by that client and proves nothing.

Anything unexpected (a malformed entry, a header over :data:`MAX_FORWARDED_CHARS`) falls back to
the peer, never to an address the client may have chosen. Here rather than in ``clawhq.api``:
the agent proxy (``clawhq.proxy``, below the API) forwards the same address.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Any

Network = IPv4Network | IPv6Network
Address = IPv4Address | IPv6Address

#: Of ``X-Forwarded-For``, only the right-most this many characters are read: room for a chain of
#: dozens of proxies, while a client padding the header only costs itself its own address.
MAX_FORWARDED_CHARS = 1024


def _address(text: str) -> Address | None:
    """An address as a peer or a header entry gives it (``[v6]`` allowed), unmapped from
    ``::ffff:a.b.c.d`` (a dual-stack socket's IPv4 peers); ``None`` if it is none."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        address = ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: Address, proxies: Sequence[Network]) -> bool:
    return any(address in network for network in proxies)


def _forwarded_for(scope: Mapping[str, Any]) -> str | None:
    """Every ``X-Forwarded-For`` line, in order, joined as one list (``None``: no header)."""
    values = [
        value.decode("latin-1")
        for name, value in scope.get("headers") or ()
        if name.lower() == b"x-forwarded-for"
    ]
    return ",".join(values) if values else None


def client_address(scope: Mapping[str, Any], proxies: Sequence[Network]) -> str:
    """The client of an HTTP or WebSocket ``scope`` ("" when the server gives no peer).

    The peer, unless it is one of ``proxies``: then the right-most ``X-Forwarded-For`` entry
    that is not a trusted proxy (if all are, the left-most); the peer again if the header is
    missing, too long or holds anything but addresses.
    """
    client = scope.get("client")
    peer = str(client[0]) if client else ""
    if not proxies:
        return peer
    peer_address = _address(peer)
    if peer_address is None or not _trusted(peer_address, proxies):
        return peer
    header = _forwarded_for(scope)
    if header is None:
        return peer
    truncated = len(header) > MAX_FORWARDED_CHARS
    entries = header[-MAX_FORWARDED_CHARS:].split(",")
    if truncated:
        entries = entries[1:]  # cut in the middle: not an address to believe
    found: Address | None = None
    for entry in reversed(entries):
        found = _address(entry)
        if found is None:
            return peer
        if not _trusted(found, proxies):
            return str(found)
    # Every entry is a trusted proxy: the left-most one read started the chain, unless the
    # header was cut, and who started it is unknown.
    return str(found) if found is not None and not truncated else peer


def client_scheme(scope: Mapping[str, Any], proxies: Sequence[Network]) -> str:
    """``http`` or ``https``: how the client reached ClawHQ.

    The connection's own scheme, unless its peer is one of ``proxies``: then the last
    ``X-Forwarded-Proto`` value (the nearest proxy's word) when it is ``http`` or ``https``.
    A client that is not a trusted proxy cannot make ClawHQ believe it came over TLS.
    """
    own = "https" if scope.get("scheme") in ("https", "wss") else "http"
    client = scope.get("client")
    peer = _address(str(client[0])) if client else None
    if not proxies or peer is None or not _trusted(peer, proxies):
        return own
    values = [
        value.decode("latin-1")
        for name, value in scope.get("headers") or ()
        if name.lower() == b"x-forwarded-proto"
    ]
    if not values:
        return own
    last = values[-1].split(",")[-1].strip().lower()
    return last if last in ("http", "https") else own
