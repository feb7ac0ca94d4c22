"""Where an agent under the ``allowlist`` egress policy may connect through ClawHQ. Pure.

An agent's allowed destinations are the chat platforms of its own channels plus the hosts the
operator lists in ``CLAWHQ_EGRESS_ALLOW``. Its model provider is not among them: model calls
go to ClawHQ's LLM gateway, which the firewall lets agents reach directly.

A pattern is ``host``, ``*.domain`` (any subdomain, not the domain itself) or an IPv4 address,
each optionally with ``:port`` (without one: 443 and 80 only). A host that matches a name
pattern must also resolve to public addresses only: a name cannot lead the proxy to the host's
loopback, the metadata service or the private ranges agents are kept from. An IP-address
pattern is the operator naming that exact address, so it is allowed wherever it is (except
loopback and link-local, never).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, ip_address

#: The hosts each channel's platform is reached at (its API, its gateway, its media).
CHANNEL_HOSTS: Mapping[str, tuple[str, ...]] = {
    "telegram": ("api.telegram.org",),
    "discord": ("discord.com", "*.discord.com", "gateway.discord.gg", "*.discordapp.com"),
    "slack": ("slack.com", "*.slack.com", "*.slack-edge.com"),
    "whatsapp": ("whatsapp.com", "*.whatsapp.com", "*.whatsapp.net"),
}
#: Ports a pattern without one allows.
DEFAULT_PORTS = (443, 80)


@dataclass(frozen=True)
class Pattern:
    host: str  # lower case; "*." prefix for subdomains
    port: int | None

    @classmethod
    def parse(cls, text: str) -> Pattern:
        host, _, port = text.lower().partition(":")
        return cls(host, int(port) if port else None)

    @property
    def address(self) -> IPv4Address | None:
        try:
            return IPv4Address(self.host)
        except ValueError:
            return None

    def matches(self, host: str, port: int) -> bool:
        if port not in ((self.port,) if self.port is not None else DEFAULT_PORTS):
            return False
        if self.host.startswith("*."):
            return host.endswith(self.host[1:]) and host != self.host[2:]
        return host == self.host


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str
    #: Whether the destination was named by address: its address needs no further check.
    by_address: bool = False


def patterns_for(channels: Iterable[str], operator: Sequence[str]) -> tuple[Pattern, ...]:
    """The patterns an agent with these channels may reach, the operator's list included."""
    texts = [host for channel in channels for host in CHANNEL_HOSTS.get(channel, ())]
    return tuple(Pattern.parse(text) for text in dict.fromkeys([*texts, *operator]))


def normal_host(host: str) -> str | None:
    """The host as compared with patterns (lower case, no trailing dot, no brackets), or
    ``None`` when it is not a plausible host name or address."""
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or len(host) > 253 or any(c in host for c in "/\\@ \t?#%"):
        return None
    return host


def judge(host: str, port: int, patterns: Sequence[Pattern]) -> Verdict:
    """Whether ``host:port`` is on the agent's list (before any name is resolved)."""
    if not 0 < port < 65536:
        return Verdict(False, "not a port")
    for pattern in patterns:
        if pattern.matches(host, port):
            named = pattern.address is not None
            return Verdict(True, f"allowed by {pattern.host}", by_address=named)
    return Verdict(False, "not on the agent's egress list")


def address_problem(
    address: IPv4Address | IPv6Address, denied: Sequence[IPv4Network], *, named: bool
) -> str | None:
    """Why the proxy will not connect to this address, or ``None``.

    ``named``: the operator listed this very address, so only loopback, link-local,
    multicast and unspecified addresses are refused.
    """
    if address.is_loopback or address.is_link_local or address.is_unspecified:
        return f"{address} is the host itself or link-local"
    if address.is_multicast:
        return f"{address} is multicast"
    if named:
        return None
    if address.is_private or not address.is_global:
        return f"{address} is not a public address"
    if isinstance(address, IPv4Address) and any(address in net for net in denied):
        return f"{address} is in a denied range"
    return None


def literal_address(host: str) -> IPv4Address | IPv6Address | None:
    try:
        return ip_address(host)
    except ValueError:
        return None
