"""CIS items on what of the host a container reaches: mounts, devices, published ports, Docker's
default bridge and the engine's socket.
"""

from __future__ import annotations

from clawhq.runtime.security import ContainerSecurity
from clawhq.security.findings import Finding, pass_or_fail

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
    return pass_or_fail(
        "5.5",
        "no sensitive host directories mounted",
        not bad,
        "no host system directory is mounted",
        f"host system paths mounted: {', '.join(bad)}",
    )


def check_privileged_ports(c: ContainerSecurity) -> Finding:
    low = [str(p.host_port) for p in c.ports if 0 < p.host_port < 1024]
    return pass_or_fail(
        "5.7",
        "no privileged host ports",
        not low,
        "no host port below 1024",
        f"publishes privileged host ports: {', '.join(low)}",
    )


def check_port_interfaces(c: ContainerSecurity) -> Finding:
    wide = [
        f"{p.host_ip or '0.0.0.0'}:{p.host_port}" for p in c.ports if p.host_ip in ANY_INTERFACE
    ]
    bound = ", ".join(f"{p.host_ip}:{p.host_port}" for p in c.ports) or "no published ports"
    return pass_or_fail(
        "5.13",
        "ports bound to one interface",
        not wide,
        bound,
        f"published on every interface: {', '.join(wide)} (set CLAWHQ_AGENT_BIND_IP)",
    )


def check_devices(c: ContainerSecurity) -> Finding:
    return pass_or_fail(
        "5.17",
        "no host devices",
        not c.devices,
        "no host device exposed",
        f"host devices exposed: {', '.join(c.devices)}",
    )


def check_mount_propagation(c: ContainerSecurity) -> Finding:
    shared = [m.destination for m in c.mounts if m.propagation in ("shared", "rshared")]
    return pass_or_fail(
        "5.19",
        "mount propagation not shared",
        not shared,
        "no shared mount propagation",
        f"mounts with shared propagation: {', '.join(shared)}",
    )


def check_default_bridge(c: ContainerSecurity) -> Finding:
    on_default = c.network_mode in ("default", "bridge") or "bridge" in c.networks
    return pass_or_fail(
        "5.29",
        "not on Docker's default bridge",
        not on_default,
        f"networks {', '.join(c.networks) or c.network_mode}",
        "on Docker's default bridge, where containers can talk to each other",
    )


def check_engine_socket(c: ContainerSecurity) -> Finding:
    bad = [
        m.destination
        for m in c.mounts
        if any(m.source.endswith(s) or m.destination.endswith(s) for s in ENGINE_SOCKETS)
    ]
    return pass_or_fail(
        "5.31",
        "engine socket not mounted",
        not bad,
        "no container engine socket inside",
        f"the engine's socket is mounted at {', '.join(bad)}: that is root on the host",
    )
