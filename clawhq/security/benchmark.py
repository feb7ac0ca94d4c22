"""The CIS Docker Benchmark's container items (section 5, plus 4.1 and the daemon items that
matter to ClawHQ), as pure checks over :mod:`clawhq.runtime.security` facts.

Item numbers follow the benchmark as docker-bench-security checks it. The per-container items
live in :mod:`~clawhq.security.confinement_checks`, :mod:`~clawhq.security.host_access_checks`
and :mod:`~clawhq.security.resource_checks`; this module runs them in the benchmark's order
and adds the network and daemon items.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from clawhq.runtime.security import ContainerSecurity, DaemonFacts, NetworkFacts
from clawhq.security.confinement_checks import (
    check_apparmor,
    check_capabilities,
    check_host_ipc,
    check_host_network,
    check_host_pid,
    check_host_userns,
    check_host_uts,
    check_no_new_privileges,
    check_privileged,
    check_read_only_rootfs,
    check_seccomp,
    check_user,
)
from clawhq.security.findings import Finding, Outcome, pass_or_fail
from clawhq.security.host_access_checks import (
    check_default_bridge,
    check_devices,
    check_engine_socket,
    check_mount_propagation,
    check_port_interfaces,
    check_privileged_ports,
    check_sensitive_mounts,
)
from clawhq.security.resource_checks import (
    check_cpu,
    check_healthcheck,
    check_memory,
    check_pids_limit,
    check_restart_policy,
)

CONTAINER_CHECKS: tuple[Callable[[ContainerSecurity], Finding], ...] = (
    check_user,
    check_apparmor,
    check_capabilities,
    check_privileged,
    check_sensitive_mounts,
    check_privileged_ports,
    check_host_network,
    check_memory,
    check_cpu,
    check_read_only_rootfs,
    check_port_interfaces,
    check_restart_policy,
    check_host_pid,
    check_host_ipc,
    check_devices,
    check_mount_propagation,
    check_host_uts,
    check_seccomp,
    check_no_new_privileges,
    check_healthcheck,
    check_pids_limit,
    check_default_bridge,
    check_host_userns,
    check_engine_socket,
)


def check_isolated_networks(
    c: ContainerSecurity, networks: Mapping[str, NetworkFacts | None]
) -> Finding:
    """ClawHQ's own item: every network the container is on keeps containers apart."""
    open_ = []
    for name in c.networks or (c.network_mode,):
        facts = networks.get(name)
        if facts is None or facts.driver != "bridge" or facts.icc:
            open_.append(name)
    return pass_or_fail(
        "ClawHQ",
        "only on isolated networks",
        not open_,
        "every network it is on has inter-container traffic disabled",
        f"on networks that let containers talk to each other: {', '.join(open_)}",
    )


def check_container(
    c: ContainerSecurity, networks: Mapping[str, NetworkFacts | None]
) -> list[Finding]:
    """Every container item for one container; ``networks`` holds the networks it is on."""
    return [check(c) for check in CONTAINER_CHECKS] + [check_isolated_networks(c, networks)]


def check_agent_network(name: str, facts: NetworkFacts | None) -> list[Finding]:
    """The agent network: a bridge with icc off (CIS 2.1's intent, on ClawHQ's own network)."""
    if facts is None:
        return [
            Finding(
                "2.1",
                f"agent network {name}",
                Outcome.INFO,
                "does not exist yet: `clawhq serve` creates it with inter-container traffic off",
            )
        ]
    findings = [
        pass_or_fail(
            "2.1",
            f"icc disabled on {name}",
            facts.driver == "bridge" and not facts.icc,
            f"bridge {facts.bridge}: com.docker.network.bridge.enable_icc=false",
            f"{name} lets containers talk to each other: remove it so ClawHQ recreates it",
        )
    ]
    if facts.ipv6:
        findings.append(
            Finding(
                "ClawHQ",
                f"IPv4 only on {name}",
                Outcome.FAIL,
                "IPv6 is enabled, and ClawHQ's firewall rules cover IPv4 only",
            )
        )
    return findings


def check_daemon(facts: DaemonFacts, default_bridge: NetworkFacts | None) -> list[Finding]:
    """Daemon items that matter to ClawHQ; informational, since ClawHQ does not own the daemon."""
    live = (
        "on: containers keep running while dockerd restarts or upgrades"
        if facts.live_restore
        else "off: restarting dockerd stops every agent; ClawHQ's supervisor starts them again "
        'once the engine is back (set "live-restore": true in daemon.json to keep them up)'
    )
    findings = [Finding("2.14", "live restore", Outcome.INFO, f"live-restore is {live}")]
    if default_bridge is not None:
        findings.append(
            Finding(
                "2.1",
                "icc on the default bridge",
                Outcome.INFO,
                (
                    "on (Docker's default): containers on docker0 can talk to each other; "
                    "ClawHQ never puts agents there"
                )
                if default_bridge.icc
                else "off",
            )
        )
    findings.append(
        Finding(
            "2.8",
            "user namespace remapping",
            Outcome.INFO,
            "on: root in a container is an unprivileged user on the host"
            if facts.has_option("userns")
            else "off: uid 0 in a container is uid 0 on the host; ClawHQ runs agents as "
            "1001:1001 with no capabilities, so this matters only for other containers",
        )
    )
    return findings
