"""What the firewall needs to know about the host: its DNS resolvers and its own networks."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, ip_address
from pathlib import Path
from typing import Any

from clawhq.errors import FirewallError

RESOLV_CONF = Path("/etc/resolv.conf")
# systemd-resolved's stub (127.0.0.53) hides the real resolvers; Docker reads them here.
RESOLVED_UPSTREAM = Path("/run/systemd/resolve/resolv.conf")
# Interfaces that are Docker's own (their networks are covered by the private ranges, and they
# come and go with every `docker network create`) or have no network of their own.
_SKIPPED_PREFIXES = ("lo", "docker", "br-", "veth")


@dataclass(frozen=True)
class HostFacts:
    dns_servers: tuple[IPv4Address, ...]
    networks: tuple[IPv4Network, ...]


def nameservers(resolv_conf: str) -> list[IPv4Address]:
    """The IPv4 ``nameserver`` entries of a resolv.conf, in order."""
    found = []
    for line in resolv_conf.splitlines():
        parts = line.split("#", 1)[0].split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                address = ip_address(parts[1].split("%", 1)[0])
            except ValueError:
                continue
            if isinstance(address, IPv4Address):
                found.append(address)
    return found


def connected_networks(addresses: Sequence[Mapping[str, Any]]) -> list[IPv4Network]:
    """The IPv4 networks of the host's own interfaces, from ``ip -j -4 addr show``."""
    found: list[IPv4Network] = []
    for link in addresses:
        name = str(link.get("ifname", ""))
        if name.startswith(_SKIPPED_PREFIXES):
            continue
        for info in link.get("addr_info") or ():
            if info.get("family") != "inet" or info.get("scope") == "host":
                continue
            net = IPv4Interface(f"{info['local']}/{info.get('prefixlen', 32)}").network
            if net not in found:
                found.append(net)
    return found


def _read(paths: Iterable[Path]) -> str:
    for path in paths:
        try:
            return path.read_text()
        except OSError:
            continue
    return ""


def read_host_facts() -> HostFacts:
    """The resolvers Docker forwards agents' lookups to, and the host's connected networks."""
    servers = nameservers(_read([RESOLV_CONF]))
    if not servers or all(s.is_loopback for s in servers):
        servers = nameservers(_read([RESOLVED_UPSTREAM])) or servers
    try:
        out = subprocess.run(
            ["ip", "-j", "-4", "addr", "show"],  # noqa: S607 - iproute2's ip, found on PATH
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        networks = connected_networks(json.loads(out or "[]"))
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise FirewallError(f"cannot list the host's addresses with `ip` ({exc})") from None
    return HostFacts(tuple(servers), tuple(networks))
