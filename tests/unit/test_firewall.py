"""The firewall rules as a pure function of settings, the network and the host; the host facts."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network

from clawhq.network.firewall import chain_names, inputs_for, plan_rules, webhook_port
from clawhq.network.host import connected_networks, nameservers
from clawhq.network.iptables import Iptables
from clawhq.runtime.security import NetworkFacts
from clawhq.settings import load_settings

NETWORK = NetworkFacts(
    id="90f134969686" + "a" * 52,
    name="clawhq-agents",
    driver="bridge",
    bridge="br-90f134969686",
    subnets=("172.21.0.0/16",),
    gateways=("172.21.0.1",),
    icc=False,
    ipv6=False,
    internal=False,
)
RESOLVER = IPv4Address("10.255.255.53")


def plan(**settings: object):  # type: ignore[no-untyped-def]
    host_networks = [IPv4Network("192.0.2.0/24"), IPv4Network("10.1.0.0/16")]
    inputs = inputs_for(load_settings(**settings), NETWORK, [RESOLVER], host_networks)
    return plan_rules(inputs)


def rules(chain_index: int, **settings: object) -> list[str]:
    chain = plan(**settings).chains[chain_index]
    return [" ".join(rule.args()) for rule in chain.rules]


def test_host_chain_allows_replies_the_webhook_and_dns_and_rejects_the_rest() -> None:
    host = plan(port=8123, agent_listener_port=8124).chains[0]
    assert host.parent == "INPUT" and host.bridge == "br-90f134969686"
    assert host.jump()[:2] == ("-i", "br-90f134969686") and host.jump()[-1] == host.name
    lines = rules(0, port=8123, agent_listener_port=8124)
    assert "RELATED,ESTABLISHED" in lines[0] and lines[0].endswith("-j RETURN")
    # The agents' listener, not the user API's port.
    assert lines[1].startswith("-p tcp -m tcp --dport 8124 ") and lines[1].endswith("RETURN")
    assert not any("--dport 8123" in line for line in lines)
    assert lines[2].startswith("-d 10.255.255.53/32 -p udp -m udp --dport 53")
    assert lines[3].startswith("-d 10.255.255.53/32 -p tcp -m tcp --dport 53")
    assert lines[-1].endswith("-j REJECT --reject-with icmp-admin-prohibited")
    assert " -d " not in lines[-1] and " -p " not in lines[-1]  # everything else
    assert len(lines) == 5


def test_forward_chain_rejects_metadata_private_ranges_and_the_hosts_networks() -> None:
    lines = rules(1)
    assert plan().chains[1].parent == "DOCKER-USER"
    assert "RELATED,ESTABLISHED" in lines[0]
    assert "--dport 53" in lines[1] and "--dport 53" in lines[2]
    rejected = [line.split()[1] for line in lines if "REJECT" in line]
    # 10.1.0.0/16 (a host network) is inside 10.0.0.0/8 already; 192.0.2.0/24 is not private.
    assert rejected == [
        "169.254.0.0/16",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "192.0.2.0/24",
    ]
    assert not any(line.endswith("ACCEPT") for line in lines)  # it only ever narrows


def test_metadata_is_rejected_even_with_no_private_ranges() -> None:
    rejected = [line.split()[1] for line in rules(1, agent_egress_deny="") if "REJECT" in line]
    assert rejected == ["169.254.0.0/16", "192.0.2.0/24", "10.1.0.0/16"]


def test_webhook_port_follows_the_webhook_url() -> None:
    # The agents' listener, never the user API's port.
    assert webhook_port(load_settings(port=8000)) == 8001
    assert webhook_port(load_settings(port=8000, agent_listener_port=9101)) == 9101
    assert webhook_port(load_settings(webhook_base_url="http://172.18.0.1:9001")) == 9001
    assert webhook_port(load_settings(webhook_base_url="https://hooks.example.com")) == 443


def test_restore_script_declares_both_chains_and_quotes_comments() -> None:
    script = plan().restore_script()
    first, second = chain_names("clawhq-agents")
    assert script.splitlines()[:3] == ["*filter", f":{first} - [0:0]", f":{second} - [0:0]"]
    assert script.rstrip().endswith("COMMIT")
    assert f'-A {second} -d 169.254.0.0/16 -m comment --comment "clawhq: reject cloud' in script


def test_chain_names_fit_iptables_and_differ_per_network() -> None:
    names = chain_names("a-network-name-that-is-rather-long-for-a-chain")
    assert all(len(n) <= 28 for n in names)
    assert chain_names("clawhq-agents") != chain_names("clawhq-sec-test")
    assert chain_names("clawhq-agents") == chain_names("clawhq-agents")


def test_nameservers_and_connected_networks_are_read_from_the_host() -> None:
    conf = "# generated\nnameserver 10.255.255.53\nnameserver ::1\nnameserver 127.0.0.53\nsearch x"
    assert nameservers(conf) == [IPv4Address("10.255.255.53"), IPv4Address("127.0.0.53")]

    def link(name: str, address: str, prefix: int) -> dict:
        return {
            "ifname": name,
            "addr_info": [{"family": "inet", "local": address, "prefixlen": prefix}],
        }

    links = [
        link("lo", "127.0.0.1", 8),
        link("eth0", "192.0.2.2", 24),
        link("docker0", "172.17.0.1", 16),
        link("br-3ff98d88b6c9", "172.20.0.1", 16),
        link("wg0", "10.8.0.1", 24),
    ]
    assert connected_networks(links) == [IPv4Network("192.0.2.0/24"), IPv4Network("10.8.0.0/24")]
    # Loopback resolvers are never allowed: Docker does not forward to them either.
    inputs = inputs_for(load_settings(), NETWORK, [IPv4Address("127.0.0.53"), RESOLVER], [])
    assert inputs.dns_servers == (RESOLVER,)


class FakeIptables:
    """Records commands; answers `-S` from a fixed listing."""

    def __init__(self, listing: dict[str, list[str]]) -> None:
        self.listing = listing
        self.calls: list[list[str]] = []

    def __call__(self, args: Sequence[str], stdin: str | None) -> subprocess.CompletedProcess[str]:
        args = list(args)
        self.calls.append(args)
        rest = args[3:] if args[1] == "-w" else args[1:]
        if rest[0] == "-S":
            lines = self.listing.get(rest[1])
            if lines is None:
                return subprocess.CompletedProcess(args, 1, "", "no chain")
            return subprocess.CompletedProcess(args, 0, "\n".join(lines) + "\n", "")
        return subprocess.CompletedProcess(args, 0, "", "")


def test_teardown_deletes_only_jumps_to_its_own_chains() -> None:
    first, second = chain_names("clawhq-agents")
    fake = FakeIptables(
        {
            "INPUT": [
                "-P INPUT ACCEPT",
                f'-A INPUT -i br-90f134969686 -m comment --comment "clawhq: agents" -j {first}',
                "-A INPUT -i eth0 -j ACCEPT",
                f"-A INPUT -i br-0ld0ld0ld0ld -j {first}",
            ],
            "DOCKER-USER": ["-N DOCKER-USER", "-A DOCKER-USER -j RETURN"],
            first: [f"-N {first}"],
        }
    )
    removed = Iptables(runner=fake).remove("clawhq-agents")
    deletes = [c[3:] for c in fake.calls if "-D" in c]
    assert deletes == [
        ["-D", "INPUT", "-i", "br-0ld0ld0ld0ld", "-j", first],
        ["-D", "INPUT", "-i", "br-90f134969686", "-m", "comment", "--comment", "clawhq: agents",
         "-j", first],
    ]  # fmt: skip
    assert ["-X", first] in [c[3:] for c in fake.calls]
    assert not any(second in c for c in fake.calls if "-X" in c)  # it did not exist
    assert len(removed) == 3
