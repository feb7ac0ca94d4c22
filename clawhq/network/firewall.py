"""Which iptables rules keep agents away from the host and the networks around it. Pure.

An agent runs whatever tool calls its model asks for, so ClawHQ treats it as hostile towards
everything but the internet. Its traffic enters the host on the agent network's bridge
(``br-`` + the first 12 digits of the network id) and goes one of two ways:

- to an address of the host itself (the bridge's gateway, the host's LAN address, anything
  listening on ``0.0.0.0``): the ``INPUT`` chain. Docker filters none of it.
- to anywhere else: the ``FORWARD`` chain, where Docker sends it through ``DOCKER-USER`` first.

``clawhq network setup`` installs two chains per agent network, each reached by one jump at the
top of its parent chain that matches only the agent bridge (``-i br-…``), so nothing else on
the host is filtered:

``CLAWHQ-IN-<digest>`` (from ``INPUT``), traffic to the host:

1. ``RELATED,ESTABLISHED`` returns: replies on connections the host opened (health probes,
   the published port through docker-proxy).
2. TCP to the agent listener's port (``CLAWHQ_AGENT_LISTENER_PORT``, or the port of
   ``CLAWHQ_WEBHOOK_BASE_URL``) returns: agents post heartbeats and reach the LLM gateway there.
   The user API's port (``CLAWHQ_PORT``) is not among them, even when it listens on 0.0.0.0.
3. DNS (udp and tcp 53) to each of the host's resolvers returns, in case one is the host.
4. Everything else is rejected: SSH, databases, the Docker API on TCP, other agents' published
   ports, whatever an operator runs on the host.

``CLAWHQ-FWD-<digest>`` (from ``DOCKER-USER``), traffic through the host:

1. ``RELATED,ESTABLISHED`` returns: replies to clients of an agent's published port.
2. DNS (udp and tcp 53) to the host's resolvers returns: Docker's embedded DNS forwards an
   agent's lookups from the agent's own namespace, and resolvers often sit in private ranges
   (a cloud VPC's at 10.x.0.2, Google Cloud's at 169.254.169.254).
3. ``169.254.0.0/16`` is rejected: the cloud metadata service (169.254.169.254, which hands out
   the machine's credentials) and every other link-local service.
4. Each range of ``CLAWHQ_AGENT_EGRESS_DENY`` is rejected (default: 10/8, 172.16/12,
   192.168/16 and 100.64/10): the private networks around the host, other Docker networks.
5. Each IPv4 network the host is directly connected to (except Docker's own bridges) is
   rejected: the host's LAN neighbours, whatever range they are in.

The egress network (``CLAWHQ_EGRESS_NETWORK``, agents whose plan's egress policy is
``allowlist`` or ``none``) gets stricter chains: to the host, only the webhook port (where the
LLM gateway is too) and ClawHQ's forward proxy (``CLAWHQ_EGRESS_PROXY_PORT``); through the
host, nothing but replies. Not even DNS: an agent there names no host itself (the forward
proxy resolves what it allows), so lookups cannot carry data out either. Its containers'
embedded resolver forwards to the egress gateway (``egress_dns`` in controller/spec.py), whose
port 53 is rejected here; left to Docker's default it would forward to the host's resolvers,
and one on the host's loopback (dnsmasq, unbound) is asked from the host's own namespace, where
no rule of the agent bridge applies.

What is not rejected returns to Docker's rules, which let the agent reach the internet (its LLM
provider, its chat platforms) through NAT. Rejections answer at once
(``icmp-admin-prohibited``) rather than dropping silently, so a blocked agent fails fast and says
so. Traffic between agents on the bridge is already dropped by Docker (``enable_icc=false``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from urllib.parse import urlsplit

from clawhq.runtime.security import NetworkFacts
from clawhq.settings import Settings

METADATA = IPv4Network("169.254.0.0/16")
REJECT = ("-j", "REJECT", "--reject-with", "icmp-admin-prohibited")
ESTABLISHED = ("-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED")
INPUT = "INPUT"
DOCKER_USER = "DOCKER-USER"
CHAIN_PREFIX = "CLAWHQ-"


ALLOW = ("-j", "RETURN")  # back to the parent chain: the host's own rules still apply


@dataclass(frozen=True)
class Rule:
    """One rule of a chain: what it matches, its target, and why it is there (its comment)."""

    match: tuple[str, ...]
    target: tuple[str, ...]
    why: str

    def args(self) -> tuple[str, ...]:
        return (*self.match, "-m", "comment", "--comment", self.why, *self.target)

    @property
    def rejects(self) -> bool:
        return self.target == REJECT


@dataclass(frozen=True)
class Chain:
    name: str
    parent: str
    bridge: str
    network: str
    rules: tuple[Rule, ...]

    def jump(self) -> tuple[str, ...]:
        """The rule in ``parent`` that sends the bridge's traffic here."""
        comment = f"clawhq: agents on {self.network}"
        return ("-i", self.bridge, "-m", "comment", "--comment", comment, "-j", self.name)


@dataclass(frozen=True)
class FirewallInputs:
    """Everything the rules depend on, gathered from settings, the engine and the host."""

    network: str
    bridge: str
    webhook_port: int
    dns_servers: tuple[IPv4Address, ...]
    private: tuple[IPv4Network, ...]  # CLAWHQ_AGENT_EGRESS_DENY
    host_networks: tuple[IPv4Network, ...]  # the host's own, not inside a private range
    #: The egress network: ClawHQ's ports only, no direct connection out (docs/egress.md).
    restricted: bool = False
    proxy_port: int = 0  # CLAWHQ_EGRESS_PROXY_PORT, on the restricted network

    @property
    def denied(self) -> tuple[IPv4Network, ...]:
        return (METADATA, *self.private, *self.host_networks)


@dataclass(frozen=True)
class FirewallPlan:
    inputs: FirewallInputs
    chains: tuple[Chain, ...]

    def restore_script(self) -> str:
        """``iptables-restore --noflush`` input that (re)creates both chains in one transaction.

        Declaring a chain creates it, or empties one that exists: the old rules are replaced
        atomically, so re-running setup never leaves a moment without them.
        """
        lines = ["*filter", *(f":{chain.name} - [0:0]" for chain in self.chains)]
        for chain in self.chains:
            lines += [_restore_line(("-A", chain.name, *rule.args())) for rule in chain.rules]
        return "\n".join([*lines, "COMMIT", ""])

    def describe(self) -> list[str]:
        """Each chain and rule in words, for ``clawhq network status`` and the docs."""
        out = []
        for chain in self.chains:
            out.append(f"{chain.parent} -i {chain.bridge} -> {chain.name}")
            for rule in chain.rules:
                verdict = "reject" if rule.rejects else "allow"
                out.append(f"  {verdict:6} {rule.why}")
        return out


def _restore_line(args: Sequence[str]) -> str:
    """One iptables-restore line: it understands double quotes only."""
    for arg in args:
        if '"' in arg or "\\" in arg:
            raise ValueError(f"cannot quote {arg!r} for iptables-restore")
    return " ".join(
        f'"{a}"' if not a or any(c.isspace() or c == "'" for c in a) else a for a in args
    )


def chain_names(network: str) -> tuple[str, str]:
    """The two chains of one agent network, named from its name (iptables allows 28 chars).

    Named from the network rather than its bridge, so a network recreated under the same name
    (a new bridge) gets its rules replaced, and teardown works once the network is gone.
    """
    digest = hashlib.sha256(network.encode()).hexdigest()[:8]
    return f"{CHAIN_PREFIX}IN-{digest}", f"{CHAIN_PREFIX}FWD-{digest}"


def webhook_port(settings: Settings) -> int:
    """The port agents reach ClawHQ on (webhooks, the LLM gateway): ``CLAWHQ_WEBHOOK_BASE_URL``'s,
    else the agent listener's (``CLAWHQ_AGENT_LISTENER_PORT``); never the user API's."""
    if settings.webhook_base_url:
        url = urlsplit(settings.webhook_base_url)
        return url.port or (443 if url.scheme == "https" else 80)
    return settings.agent_listener_port


def _without_nested(networks: Sequence[IPv4Network]) -> tuple[IPv4Network, ...]:
    """Drop duplicates and networks inside another one of the list, keeping the order."""
    kept: list[IPv4Network] = []
    for net in networks:
        if not any(net.subnet_of(other) for other in networks if other != net) and net not in kept:
            kept.append(net)
    return tuple(kept)


def inputs_for(
    settings: Settings,
    network: NetworkFacts,
    dns_servers: Sequence[IPv4Address],
    host_networks: Sequence[IPv4Network],
    *,
    restricted: bool = False,
) -> FirewallInputs:
    private = tuple(
        n for n in _without_nested(settings.agent_egress_deny) if not n.subnet_of(METADATA)
    )
    covered = (METADATA, *private)
    own = tuple(
        n for n in _without_nested(host_networks) if not any(n.subnet_of(c) for c in covered)
    )
    return FirewallInputs(
        network=network.name,
        bridge=network.bridge,
        webhook_port=webhook_port(settings),
        dns_servers=tuple(dict.fromkeys(a for a in dns_servers if not a.is_loopback)),
        private=private,
        host_networks=own,
        restricted=restricted,
        proxy_port=settings.egress_proxy_port if restricted else 0,
    )


def _dns(servers: Sequence[IPv4Address]) -> list[Rule]:
    return [
        Rule(
            ("-d", f"{server}/32", "-p", proto, "-m", proto, "--dport", "53"),
            ALLOW,
            f"clawhq: allow DNS ({proto}) to resolver {server}",
        )
        for server in servers
        for proto in ("udp", "tcp")
    ]


def plan_rules(inputs: FirewallInputs) -> FirewallPlan:
    """The chains and rules for one agent network (see the module docstring for each rule)."""
    if inputs.restricted:
        return _restricted_plan(inputs)
    to_host, through_host = chain_names(inputs.network)
    port = str(inputs.webhook_port)
    host_rules = (
        Rule(ESTABLISHED, ALLOW, "clawhq: allow replies on connections the host opened"),
        Rule(
            ("-p", "tcp", "-m", "tcp", "--dport", port),
            ALLOW,
            f"clawhq: allow the webhook port {port}",
        ),
        *_dns(inputs.dns_servers),
        Rule((), REJECT, "clawhq: reject every other host service"),
    )
    forward_rules = (
        Rule(ESTABLISHED, ALLOW, "clawhq: allow replies to clients of the agent"),
        *_dns(inputs.dns_servers),
        Rule(("-d", str(METADATA)), REJECT, "clawhq: reject cloud metadata and link-local"),
        *(
            Rule(("-d", str(net)), REJECT, f"clawhq: reject private network {net}")
            for net in inputs.private
        ),
        *(
            Rule(("-d", str(net)), REJECT, f"clawhq: reject the host's network {net}")
            for net in inputs.host_networks
        ),
    )
    chains = (
        Chain(to_host, INPUT, inputs.bridge, inputs.network, host_rules),
        Chain(through_host, DOCKER_USER, inputs.bridge, inputs.network, forward_rules),
    )
    return FirewallPlan(inputs, chains)


def _restricted_plan(inputs: FirewallInputs) -> FirewallPlan:
    """The egress network's chains: ClawHQ's two ports on the host, and nothing through it."""
    to_host, through_host = chain_names(inputs.network)
    ports = dict.fromkeys((inputs.webhook_port, inputs.proxy_port))
    host_rules = (
        Rule(ESTABLISHED, ALLOW, "clawhq: allow replies on connections the host opened"),
        *(
            Rule(
                ("-p", "tcp", "-m", "tcp", "--dport", str(port)),
                ALLOW,
                f"clawhq: allow ClawHQ's port {port}",
            )
            for port in ports
            if port
        ),
        Rule((), REJECT, "clawhq: reject every other host service, DNS too"),
    )
    forward_rules = (
        Rule(ESTABLISHED, ALLOW, "clawhq: allow replies to clients of the agent"),
        Rule((), REJECT, "clawhq: reject every direct connection out (egress through ClawHQ)"),
    )
    chains = (
        Chain(to_host, INPUT, inputs.bridge, inputs.network, host_rules),
        Chain(through_host, DOCKER_USER, inputs.bridge, inputs.network, forward_rules),
    )
    return FirewallPlan(inputs, chains)
