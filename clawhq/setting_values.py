"""How settings values are written in the environment: sizes, keys, networks, host lists."""

from __future__ import annotations

import base64
import binascii
import re
from ipaddress import IPv4Network, IPv6Network, ip_network

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([bkmg]?)i?b?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(value: str | int) -> int:
    """Parse a Docker-style size (``512m``, ``1g``, ``1GiB``, bytes as int) into bytes."""
    if isinstance(value, int):
        return value
    match = _SIZE_RE.match(value)
    if not match:
        raise ValueError(f"not a size: {value!r} (use forms like 512m or 1g)")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]


def decode_encryption_key(value: str) -> bytes:
    """Decode a url-safe base64 key and check it holds exactly 32 bytes."""
    try:
        raw = base64.urlsafe_b64decode(value.encode() + b"=" * (-len(value) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("must be url-safe base64 (run `clawhq keys generate`)") from exc
    if len(raw) != 32:
        raise ValueError(f"must decode to 32 bytes, got {len(raw)} (run `clawhq keys generate`)")
    return raw


def networks(value: str) -> tuple[IPv4Network, ...]:
    """``10.0.0.0/8,192.168.0.0/16`` as networks (an empty string is none)."""
    try:
        return tuple(IPv4Network(part.strip()) for part in value.split(",") if part.strip())
    except ValueError as exc:
        raise ValueError(
            f"must be comma-separated IPv4 networks such as 10.0.0.0/8 ({exc})"
        ) from None


def any_networks(value: str) -> tuple[IPv4Network | IPv6Network, ...]:
    """``10.0.0.5,fd00::/64`` as networks, IPv4 or IPv6 (a bare address is a /32 or /128)."""
    try:
        return tuple(ip_network(part.strip()) for part in value.split(",") if part.strip())
    except ValueError as exc:
        raise ValueError(
            f"must be comma-separated IP addresses or networks such as 10.0.0.5,fd00::/64 ({exc})"
        ) from None


_LABEL = r"[a-z0-9]([a-z0-9-]*[a-z0-9])?"
_HOST_PATTERN = re.compile(rf"^(\*\.)?{_LABEL}(\.{_LABEL})*(:\d{{1,5}})?$")


def host_patterns(value: str) -> tuple[str, ...]:
    """``api.telegram.org,*.slack.com:443`` as lower-case host patterns (empty: none).

    A pattern is a host name or IPv4 address, optionally ``*.`` for any subdomain, optionally
    ``:port`` (without one, any port).
    """
    out = []
    for part in value.split(","):
        pattern = part.strip().lower().rstrip(".")
        if not pattern:
            continue
        if not _HOST_PATTERN.match(pattern):
            raise ValueError(
                f"not a host pattern: {part.strip()!r} (use forms like api.example.com, "
                "*.example.com or 203.0.113.7:443)"
            )
        out.append(pattern)
    return tuple(dict.fromkeys(out))
