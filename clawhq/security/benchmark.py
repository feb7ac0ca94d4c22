"""The CIS Docker Benchmark's container items (section 5, plus 4.1 and the daemon items that
matter to ClawHQ), as pure checks over :mod:`clawhq.runtime.security` facts.

Item numbers follow the benchmark as docker-bench-security checks it. Each check returns one
:class:`Finding`; ``FAIL`` fails ``clawhq doctor --security``. ``EXCEPTION`` is a deliberate,
documented deviation (ClawHQ's supervisor, not Docker, restarts agents and probes their
health) and ``INFO`` is something an operator should know; neither fails.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from clawhq.runtime.security import ContainerSecurity, DaemonFacts, NetworkFacts


class Outcome(StrEnum):
    PASS = "pass"
    FAIL = "FAIL"
    EXCEPTION = "exception"
    INFO = "info"


@dataclass(frozen=True)
class Finding:
    ref: str  # "5.4"; "ClawHQ" for ClawHQ's own items
    title: str
    outcome: Outcome
    detail: str

    @property
    def failed(self) -> bool:
        return self.outcome is Outcome.FAIL


def _result(ref: str, title: str, ok: bool, good: str, bad: str) -> Finding:
    return Finding(ref, title, Outcome.PASS if ok else Outcome.FAIL, good if ok else bad)


# Host paths a container must never see (CIS 5.5), and the engine's own sockets (CIS 5.31).
SENSITIVE_HOST_PATHS = (
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib64",
    "/proc",
    "/sys",
    "/usr",
    "/bin",
    "/sbin",
    "/root",
    "/run",
    "/var/run",
    "/var/lib/docker",
    "/var/lib/containerd",
)
ENGINE_SOCKETS = ("docker.sock", "containerd.sock", "dockershim.sock", "podman.sock")
ANY_INTERFACE = ("", "0.0.0.0", "::")


def _is_root(user: str) -> bool:
    name = user.split(":", 1)[0].strip()
    return name in ("", "root", "0")


def check_user(c: ContainerSecurity) -> Finding:
    return _result(
        "4.1",
        "runs as a non-root user",
        not _is_root(c.user),
        f"user {c.user}",
        "runs as root (no USER in the image and no --user): "
        "a process that escapes the container is root on the host's kernel",
    )


def check_apparmor(c: ContainerSecurity) -> Finding:
    profile = c.security_options.get("apparmor", c.apparmor_profile)
    if profile == "unconfined":
        return Finding("5.1", "AppArmor profile", Outcome.FAIL, "AppArmor is disabled (unconfined)")
    if not profile:
        return Finding(
            "5.1", "AppArmor profile", Outcome.INFO, "no AppArmor on this host (not enforced)"
        )
    return Finding("5.1", "AppArmor profile", Outcome.PASS, f"profile {profile}")


def check_capabilities(c: ContainerSecurity) -> Finding:
    drops_all = any(cap.upper() in ("ALL", "CAP_ALL") for cap in c.cap_drop)
    problems = []
    if not drops_all:
        problems.append("CapDrop does not contain ALL")
    if c.cap_add:
        problems.append(f"CapAdd adds {', '.join(c.cap_add)}")
    return _result(
        "5.3",
        "capabilities dropped",
        not problems,
        "CapDrop ALL, nothing added",
        "; ".join(problems) + " (the container keeps kernel privileges it does not need)",
    )


def check_privileged(c: ContainerSecurity) -> Finding:
    return _result(
        "5.4",
        "not privileged",
        not c.privileged,
        "not privileged",
        "privileged: every capability, every device, no seccomp or AppArmor (root on the host)",
    )


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def check_sensitive_mounts(c: ContainerSecurity) -> Finding:
    bad = [
        f"{m.source}:{m.destination}"
        for m in c.mounts
        if m.type == "bind"
        and (
            m.source.rstrip("/") in ("", "/")
            or any(_under(m.source, p) for p in SENSITIVE_HOST_PATHS)
        )
    ]
    return _result(
        "5.5",
        "no sensitive host directories mounted",
        not bad,
        "no host system directory is mounted",
        f"host system paths mounted: {', '.join(bad)}",
    )


def check_privileged_ports(c: ContainerSecurity) -> Finding:
    low = [str(p.host_port) for p in c.ports if 0 < p.host_port < 1024]
    return _result(
        "5.7",
        "no privileged host ports",
        not low,
        "no host port below 1024",
        f"publishes privileged host ports: {', '.join(low)}",
    )


def check_host_network(c: ContainerSecurity) -> Finding:
    return _result(
        "5.9",
        "host network namespace not shared",
        c.network_mode != "host",
        f"network {c.network_mode or 'default'}",
        "shares the host's network namespace (--network host): it reaches every host service "
        "and no firewall rule on the agent bridge applies",
    )


def check_memory(c: ContainerSecurity) -> Finding:
    if c.memory_bytes <= 0:
        return Finding("5.10", "memory limited", Outcome.FAIL, "no memory limit")
    swap = (
        "no swap beyond it"
        if c.memory_swap_bytes == c.memory_bytes
        else f"swap limit {c.memory_swap_bytes}"
    )
    return Finding(
        "5.10", "memory limited", Outcome.PASS, f"{c.memory_bytes // 1024**2} MiB, {swap}"
    )


def check_cpu(c: ContainerSecurity) -> Finding:
    if c.nano_cpus > 0:
        return Finding("5.11", "CPU limited", Outcome.PASS, f"{c.nano_cpus / 1e9:g} CPUs")
    if c.cpu_quota > 0:
        period = c.cpu_period or 100_000
        return Finding(
            "5.11", "CPU limited", Outcome.PASS, f"quota {c.cpu_quota}/{period} µs per period"
        )
    return Finding("5.11", "CPU limited", Outcome.FAIL, "no CPU quota: it can take every core")


def check_read_only_rootfs(c: ContainerSecurity) -> Finding:
    return _result(
        "5.12",
        "read-only root filesystem",
        c.read_only_rootfs,
        "root filesystem is read-only",
        "root filesystem is writable: a compromised agent can change its own programs",
    )


def check_port_interfaces(c: ContainerSecurity) -> Finding:
    wide = [
        f"{p.host_ip or '0.0.0.0'}:{p.host_port}" for p in c.ports if p.host_ip in ANY_INTERFACE
    ]
    bound = ", ".join(f"{p.host_ip}:{p.host_port}" for p in c.ports) or "no published ports"
    return _result(
        "5.13",
        "ports bound to one interface",
        not wide,
        bound,
        f"published on every interface: {', '.join(wide)} (set CLAWHQ_AGENT_BIND_IP)",
    )


def check_restart_policy(c: ContainerSecurity) -> Finding:
    title = "restart policy"
    if c.restart_policy in ("", "no"):
        return Finding(
            "5.14",
            title,
            Outcome.EXCEPTION,
            'policy "no", by design: ClawHQ\'s supervisor restarts agents itself with a '
            "backoff (10 s doubling to 5 min) and records why; a Docker restart policy would "
            "race it, skip the backoff and hide crashes from the agent's status",
        )
    if c.restart_policy == "on-failure" and 0 < c.restart_max_retries <= 5:
        return Finding(
            "5.14", title, Outcome.PASS, f"on-failure, at most {c.restart_max_retries} retries"
        )
    return Finding(
        "5.14",
        title,
        Outcome.FAIL,
        f"policy {c.restart_policy!r} restarts without bound "
        '(CIS: on-failure with at most 5 retries; ClawHQ agents use "no")',
    )


def check_host_pid(c: ContainerSecurity) -> Finding:
    return _result(
        "5.15",
        "host PID namespace not shared",
        c.pid_mode != "host",
        "own PID namespace",
        "shares the host's PID namespace: it sees and can signal host processes",
    )


def check_host_ipc(c: ContainerSecurity) -> Finding:
    return _result(
        "5.16",
        "host IPC namespace not shared",
        c.ipc_mode != "host",
        f"IPC {c.ipc_mode or 'private'}",
        "shares the host's IPC namespace (shared memory of host processes)",
    )


def check_devices(c: ContainerSecurity) -> Finding:
    return _result(
        "5.17",
        "no host devices",
        not c.devices,
        "no host device exposed",
        f"host devices exposed: {', '.join(c.devices)}",
    )


def check_mount_propagation(c: ContainerSecurity) -> Finding:
    shared = [m.destination for m in c.mounts if m.propagation in ("shared", "rshared")]
    return _result(
        "5.19",
        "mount propagation not shared",
        not shared,
        "no shared mount propagation",
        f"mounts with shared propagation: {', '.join(shared)}",
    )


def check_host_uts(c: ContainerSecurity) -> Finding:
    return _result(
        "5.20",
        "host UTS namespace not shared",
        c.uts_mode != "host",
        "own UTS namespace",
        "shares the host's UTS namespace (it can change the host name)",
    )


def check_seccomp(c: ContainerSecurity) -> Finding:
    profile = c.security_options.get("seccomp", "")
    return _result(
        "5.21",
        "seccomp enabled",
        profile != "unconfined",
        f"seccomp profile {'custom' if profile else 'default'}",
        "seccomp is disabled (seccomp=unconfined): every system call is open to it",
    )


def check_no_new_privileges(c: ContainerSecurity) -> Finding:
    value = c.security_options.get("no-new-privileges")
    ok = value is not None and value.lower() in ("", "true")
    return _result(
        "5.25",
        "no-new-privileges",
        ok,
        "no-new-privileges is set",
        "no-new-privileges is not set: setuid programs can raise privileges",
    )


def check_healthcheck(c: ContainerSecurity) -> Finding:
    title = "health checked at runtime"
    if c.healthcheck is not None:
        source = "the image's HEALTHCHECK" if c.healthcheck == c.image_healthcheck else "a check"
        status = f", status {c.health_status}" if c.health_status else ""
        return Finding(
            "5.26",
            title,
            Outcome.PASS,
            f"Docker runs {source}{status}; ClawHQ's supervisor also probes the health path",
        )
    note = (
        " (the image defines a HEALTHCHECK but the container disables it)"
        if c.image_healthcheck is not None
        else ""
    )
    return Finding(
        "5.26",
        title,
        Outcome.EXCEPTION,
        "no Docker HEALTHCHECK, by design: ClawHQ's supervisor probes each agent's health path "
        'itself (every CLAWHQ_HEALTH_INTERVAL, only a JSON {"ok": true} counts) and restarts '
        f"it after CLAWHQ_HEALTH_FAILURE_THRESHOLD failures{note}",
    )


def check_pids_limit(c: ContainerSecurity) -> Finding:
    return _result(
        "5.28",
        "PIDs limited",
        c.pids_limit is not None,
        f"at most {c.pids_limit} processes",
        "no PIDs limit: a fork bomb takes the host down",
    )


def check_default_bridge(c: ContainerSecurity) -> Finding:
    on_default = c.network_mode in ("default", "bridge") or "bridge" in c.networks
    return _result(
        "5.29",
        "not on Docker's default bridge",
        not on_default,
        f"networks {', '.join(c.networks) or c.network_mode}",
        "on Docker's default bridge, where containers can talk to each other",
    )


def check_host_userns(c: ContainerSecurity) -> Finding:
    return _result(
        "5.30",
        "host user namespace not shared",
        c.userns_mode != "host",
        "user namespace not shared with the host",
        "shares the host's user namespace (--userns host)",
    )


def check_engine_socket(c: ContainerSecurity) -> Finding:
    bad = [
        m.destination
        for m in c.mounts
        if any(m.source.endswith(s) or m.destination.endswith(s) for s in ENGINE_SOCKETS)
    ]
    return _result(
        "5.31",
        "engine socket not mounted",
        not bad,
        "no container engine socket inside",
        f"the engine's socket is mounted at {', '.join(bad)}: that is root on the host",
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
    return _result(
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
        _result(
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


def failed(findings: Sequence[Finding]) -> list[Finding]:
    return [f for f in findings if f.failed]
