"""The CIS checks over recorded inspect data: ClawHQ's own container passes, a weakened one fails
on exactly what was weakened."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from clawhq.runtime.security import (
    ContainerSecurity,
    NetworkFacts,
    container_security_from_inspect,
    daemon_facts_from_info,
    network_facts_from_inspect,
)
from clawhq.security.benchmark import check_agent_network, check_container, check_daemon
from clawhq.security.findings import Outcome

# `docker inspect` of a container ClawHQ deployed (trimmed to what the checks read).
HARDENED: dict[str, Any] = {
    "Id": "ec15e1ce6f63464b35cc499528cba83d4651f39f69345b36e3063b82e0aef73a",
    "Name": "/clawhq-u1-a1",
    "AppArmorProfile": "",
    "Config": {
        "User": "1001:1001",
        "Labels": {"clawhq.service": "openclaw-agent", "clawhq.agent-id": "a1"},
    },
    "State": {"Status": "running"},
    "HostConfig": {
        "Privileged": False,
        "CapAdd": None,
        "CapDrop": ["ALL"],
        "ReadonlyRootfs": True,
        "Memory": 67108864,
        "MemorySwap": 67108864,
        "NanoCpus": 0,
        "CpuQuota": 50000,
        "CpuPeriod": 100000,
        "PidsLimit": 256,
        "SecurityOpt": ["no-new-privileges:true"],
        "NetworkMode": "clawhq-agents",
        "PidMode": "",
        "IpcMode": "private",
        "UTSMode": "",
        "UsernsMode": "",
        "Devices": None,
        "PortBindings": {"18789/tcp": [{"HostIp": "127.0.0.1", "HostPort": "19400"}]},
        "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
        "Binds": ["clawhq-workspace-a1:/home/openclaw:rw"],
    },
    "Mounts": [
        {
            "Type": "volume",
            "Name": "clawhq-workspace-a1",
            "Source": "/var/lib/docker/volumes/clawhq-workspace-a1/_data",
            "Destination": "/home/openclaw",
            "RW": True,
            "Propagation": "",
        }
    ],
    "NetworkSettings": {"Networks": {"clawhq-agents": {"IPAddress": "172.20.0.2"}}},
}
AGENT_NETWORK: dict[str, Any] = {
    "Name": "clawhq-agents",
    "Id": "3ff98d88b6c992deadc25ce3dd0de09b7c7a4a65b664a91229498b20a3f6bf86",
    "Driver": "bridge",
    "EnableIPv6": False,
    "Internal": False,
    "IPAM": {"Config": [{"Subnet": "172.20.0.0/16", "Gateway": "172.20.0.1"}]},
    "Options": {"com.docker.network.bridge.enable_icc": "false"},
}
DEFAULT_BRIDGE: dict[str, Any] = {
    "Name": "bridge",
    "Id": "ee4802643b7b" + "0" * 52,
    "Driver": "bridge",
    "IPAM": {"Config": [{"Subnet": "172.17.0.0/16", "Gateway": "172.17.0.1"}]},
    "Options": {
        "com.docker.network.bridge.enable_icc": "true",
        "com.docker.network.bridge.name": "docker0",
    },
}


def networks() -> dict[str, NetworkFacts | None]:
    return {
        "clawhq-agents": network_facts_from_inspect(AGENT_NETWORK),
        "bridge": network_facts_from_inspect(DEFAULT_BRIDGE),
    }


def facts(attrs: dict[str, Any], image: dict[str, Any] | None = None) -> ContainerSecurity:
    return container_security_from_inspect(attrs, image)


def outcomes(attrs: dict[str, Any], image: dict[str, Any] | None = None) -> dict[str, Outcome]:
    return {f.ref: f.outcome for f in check_container(facts(attrs, image), networks())}


def failed_refs(attrs: dict[str, Any]) -> set[str]:
    return {ref for ref, outcome in outcomes(attrs).items() if outcome is Outcome.FAIL}


def weakened(**host: Any) -> dict[str, Any]:
    attrs = copy.deepcopy(HARDENED)
    attrs["HostConfig"].update(host)
    return attrs


def test_clawhqs_container_passes_with_its_two_documented_exceptions() -> None:
    results = outcomes(HARDENED)
    assert not [ref for ref, o in results.items() if o is Outcome.FAIL]
    exceptions = {ref for ref, o in results.items() if o is Outcome.EXCEPTION}
    assert exceptions == {"5.14", "5.26"}  # restart policy and health check: the supervisor's
    assert results["5.1"] is Outcome.INFO  # no AppArmor on the host: said, not failed
    details = {f.ref: f.detail for f in check_container(facts(HARDENED), networks())}
    assert "supervisor restarts" in details["5.14"]
    assert "supervisor probes" in details["5.26"]


@pytest.mark.parametrize(
    ("change", "ref"),
    [
        ({"Privileged": True}, "5.4"),
        ({"CapDrop": None}, "5.3"),
        ({"CapAdd": ["NET_ADMIN"]}, "5.3"),
        ({"ReadonlyRootfs": False}, "5.12"),
        ({"Memory": 0}, "5.10"),
        ({"CpuQuota": 0}, "5.11"),
        ({"PidsLimit": -1}, "5.28"),
        ({"PidsLimit": None}, "5.28"),
        ({"SecurityOpt": []}, "5.25"),
        ({"SecurityOpt": ["no-new-privileges:true", "seccomp=unconfined"]}, "5.21"),
        ({"SecurityOpt": ["no-new-privileges:true", "apparmor:unconfined"]}, "5.1"),
        ({"NetworkMode": "host"}, "5.9"),
        ({"PidMode": "host"}, "5.15"),
        ({"IpcMode": "host"}, "5.16"),
        ({"UTSMode": "host"}, "5.20"),
        ({"UsernsMode": "host"}, "5.30"),
        ({"Devices": [{"PathOnHost": "/dev/kmsg"}]}, "5.17"),
        ({"PortBindings": {"18789/tcp": [{"HostIp": "", "HostPort": "19400"}]}}, "5.13"),
        ({"PortBindings": {"18789/tcp": [{"HostIp": "127.0.0.1", "HostPort": "80"}]}}, "5.7"),
        ({"PortBindings": {"18789/tcp": [{"HostIp": "::", "HostPort": "19400"}]}}, "5.13"),
        ({"RestartPolicy": {"Name": "always", "MaximumRetryCount": 0}}, "5.14"),
    ],
)
def test_each_weakening_fails_its_own_item_only(change: dict[str, Any], ref: str) -> None:
    assert failed_refs(weakened(**change)) == {ref}


def test_mounts_of_the_host_and_the_engine_socket_fail() -> None:
    attrs = copy.deepcopy(HARDENED)
    attrs["Mounts"] += [
        {"Type": "bind", "Source": "/var/run/docker.sock", "Destination": "/var/run/docker.sock"},
        {"Type": "bind", "Source": "/etc", "Destination": "/host-etc", "RW": False},
        {"Type": "bind", "Source": "/", "Destination": "/host", "Propagation": "rshared"},
    ]
    failures = {
        f.ref: f.detail
        for f in check_container(facts(attrs), networks())
        if f.outcome is Outcome.FAIL
    }
    assert set(failures) == {"5.5", "5.19", "5.31"}
    assert "/etc:/host-etc" in failures["5.5"] and "/:/host" in failures["5.5"]
    assert "/var/run/docker.sock" in failures["5.31"]
    # A bind mount of an ordinary directory is fine.
    attrs["Mounts"] = [{"Type": "bind", "Source": "/srv/data", "Destination": "/data"}]
    assert failed_refs(attrs) == set()


def test_root_user_and_the_default_bridge_fail() -> None:
    for user in ("", "root", "0", "0:0"):
        attrs = copy.deepcopy(HARDENED)
        attrs["Config"]["User"] = user
        assert failed_refs(attrs) == {"4.1"}, user
    attrs = weakened(NetworkMode="bridge")
    attrs["NetworkSettings"]["Networks"] = {"bridge": {}}
    assert failed_refs(attrs) == {"5.29", "ClawHQ"}  # and the default bridge has icc on


def test_on_failure_with_few_retries_passes_the_restart_item() -> None:
    attrs = weakened(RestartPolicy={"Name": "on-failure", "MaximumRetryCount": 5})
    assert outcomes(attrs)["5.14"] is Outcome.PASS
    attrs = weakened(RestartPolicy={"Name": "on-failure", "MaximumRetryCount": 0})
    assert outcomes(attrs)["5.14"] is Outcome.FAIL


def test_a_healthcheck_from_the_image_is_noted() -> None:
    attrs = copy.deepcopy(HARDENED)
    check = {"Test": ["CMD", "wget", "-q", "-O-", "http://127.0.0.1:18789/healthz"]}
    attrs["Config"]["Healthcheck"] = check
    attrs["State"]["Health"] = {"Status": "healthy"}
    finding = next(
        f
        for f in check_container(facts(attrs, {"Config": {"Healthcheck": check}}), networks())
        if f.ref == "5.26"
    )
    assert finding.outcome is Outcome.PASS
    assert "image's HEALTHCHECK" in finding.detail and "healthy" in finding.detail
    disabled = copy.deepcopy(HARDENED)
    disabled["Config"]["Healthcheck"] = {"Test": ["NONE"]}
    finding = next(
        f
        for f in check_container(facts(disabled, {"Config": {"Healthcheck": check}}), networks())
        if f.ref == "5.26"
    )
    assert finding.outcome is Outcome.EXCEPTION and "disables it" in finding.detail


def test_network_facts_name_the_bridge_and_read_icc() -> None:
    agent = network_facts_from_inspect(AGENT_NETWORK)
    assert agent.bridge == "br-3ff98d88b6c9"
    assert agent.icc is False and agent.gateways == ("172.20.0.1",)
    default = network_facts_from_inspect(DEFAULT_BRIDGE)
    assert default.bridge == "docker0" and default.icc is True
    assert [f.outcome for f in check_agent_network("clawhq-agents", agent)] == [Outcome.PASS]
    open_network = network_facts_from_inspect({**AGENT_NETWORK, "Options": {}})
    assert check_agent_network("clawhq-agents", open_network)[0].outcome is Outcome.FAIL
    v6 = network_facts_from_inspect({**AGENT_NETWORK, "EnableIPv6": True})
    assert [f.outcome for f in check_agent_network("clawhq-agents", v6)][-1] is Outcome.FAIL


def test_daemon_items_are_informational() -> None:
    info = {
        "ServerVersion": "20.10.24",
        "LiveRestoreEnabled": False,
        "SecurityOptions": ["name=seccomp,profile=default"],
    }
    findings = check_daemon(
        daemon_facts_from_info(info), network_facts_from_inspect(DEFAULT_BRIDGE)
    )
    assert {f.outcome for f in findings} == {Outcome.INFO}
    live = next(f for f in findings if f.ref == "2.14")
    assert "off" in live.detail and "supervisor starts them again" in live.detail
    userns = daemon_facts_from_info({**info, "SecurityOptions": ["name=userns"]})
    assert "on:" in next(f for f in check_daemon(userns, None) if f.ref == "2.8").detail
