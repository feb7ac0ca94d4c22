"""Security facts: what the engine reports about a container's, a network's and its own hardening.

The security checks (``clawhq.security.benchmark``) and the host firewall
(``clawhq.network.firewall``) work on these typed facts, never on raw inspect data. The
``*_from_*`` functions here are pure, so they are tested on recorded inspect data;
``DockerRuntime`` builds the facts from the engine through :class:`SecurityInspector`, one of
the roles :class:`~clawhq.runtime.base.Runtime` combines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    # base imports this module (Runtime includes SecurityInspector): import it back lazily.
    from clawhq.runtime.base import PortBinding

ICC_OPTION = "com.docker.network.bridge.enable_icc"
BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"


@dataclass(frozen=True)
class MountFact:
    type: str  # bind, volume, tmpfs, npipe
    source: str
    destination: str
    read_write: bool
    propagation: str = ""


@dataclass(frozen=True)
class ContainerSecurity:
    """One container's security-relevant configuration, as ``docker inspect`` reports it."""

    id: str
    name: str
    labels: Mapping[str, str]
    user: str
    privileged: bool
    cap_add: tuple[str, ...]
    cap_drop: tuple[str, ...]
    read_only_rootfs: bool
    memory_bytes: int
    memory_swap_bytes: int
    cpu_quota: int
    cpu_period: int
    nano_cpus: int
    pids_limit: int | None  # None: unlimited
    security_opt: tuple[str, ...]
    apparmor_profile: str
    network_mode: str
    networks: tuple[str, ...]
    pid_mode: str
    ipc_mode: str
    uts_mode: str
    userns_mode: str
    mounts: tuple[MountFact, ...]
    devices: tuple[str, ...]
    ports: tuple[PortBinding, ...]
    restart_policy: str
    restart_max_retries: int
    healthcheck: tuple[str, ...] | None  # the effective test, None when there is none
    health_status: str | None
    image_healthcheck: tuple[str, ...] | None

    @property
    def security_options(self) -> dict[str, str]:
        """``SecurityOpt`` as a dict: ``seccomp=unconfined`` and ``seccomp:unconfined`` alike."""
        options: dict[str, str] = {}
        for item in self.security_opt:
            key, sep, value = item.replace(":", "=", 1).partition("=")
            options[key.strip().lower()] = value.strip() if sep else ""
        return options


@dataclass(frozen=True)
class NetworkFacts:
    """A network and, for a bridge, the host interface its traffic comes in on."""

    id: str
    name: str
    driver: str
    bridge: str
    subnets: tuple[str, ...]
    gateways: tuple[str, ...]
    icc: bool
    ipv6: bool
    internal: bool


@dataclass(frozen=True)
class DaemonFacts:
    server_version: str
    live_restore: bool
    security_options: tuple[str, ...]  # "name=seccomp,profile=default", "name=userns", …

    def has_option(self, name: str) -> bool:
        return any(f"name={name}" in option.split(",") for option in self.security_options)


@runtime_checkable
class SecurityInspector(Protocol):
    """What ``clawhq doctor --security`` and ``clawhq network`` read from the engine."""

    def security_facts(self, container_id: str) -> ContainerSecurity | None:
        """The container's security facts, or ``None`` when the engine does not know it."""
        ...

    def network_facts(self, name: str) -> NetworkFacts | None:
        """The network, or ``None`` when it does not exist."""
        ...

    def daemon_facts(self) -> DaemonFacts: ...


def _healthcheck(config: Mapping[str, Any] | None) -> tuple[str, ...] | None:
    test = (config or {}).get("Healthcheck", {}) or {}
    command = tuple(str(part) for part in test.get("Test") or ())
    if not command or command[0] == "NONE":
        return None
    return command


def _ports(port_map: Mapping[str, Any] | None) -> tuple[PortBinding, ...]:
    from clawhq.runtime.base import PortBinding

    found = []
    for key, hosts in (port_map or {}).items():
        for host in hosts or ():
            port = str(host.get("HostPort") or "0")
            found.append(
                PortBinding(
                    str(host.get("HostIp") or ""),
                    int(port) if port.isdigit() else 0,
                    int(key.split("/")[0]),
                )
            )
    return tuple(found)


def _mounts(items: Sequence[Mapping[str, Any]] | None) -> tuple[MountFact, ...]:
    return tuple(
        MountFact(
            type=str(m.get("Type", "")),
            source=str(m.get("Source", "")),
            destination=str(m.get("Destination", "")),
            read_write=bool(m.get("RW", False)),
            propagation=str(m.get("Propagation", "") or ""),
        )
        for m in items or ()
    )


def container_security_from_inspect(
    attrs: Mapping[str, Any], image_attrs: Mapping[str, Any] | None = None
) -> ContainerSecurity:
    """Security facts from ``docker inspect`` of a container (and of its image, if given)."""
    host = attrs.get("HostConfig") or {}
    config = attrs.get("Config") or {}
    state = attrs.get("State") or {}
    restart = host.get("RestartPolicy") or {}
    pids = host.get("PidsLimit")
    networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
    return ContainerSecurity(
        id=str(attrs.get("Id", "")),
        name=str(attrs.get("Name", "")).lstrip("/"),
        labels=dict(config.get("Labels") or {}),
        user=str(config.get("User") or ""),
        privileged=bool(host.get("Privileged")),
        cap_add=tuple(host.get("CapAdd") or ()),
        cap_drop=tuple(host.get("CapDrop") or ()),
        read_only_rootfs=bool(host.get("ReadonlyRootfs")),
        memory_bytes=int(host.get("Memory") or 0),
        memory_swap_bytes=int(host.get("MemorySwap") or 0),
        cpu_quota=int(host.get("CpuQuota") or 0),
        cpu_period=int(host.get("CpuPeriod") or 0),
        nano_cpus=int(host.get("NanoCpus") or 0),
        pids_limit=int(pids) if pids and int(pids) > 0 else None,
        security_opt=tuple(host.get("SecurityOpt") or ()),
        apparmor_profile=str(attrs.get("AppArmorProfile") or ""),
        network_mode=str(host.get("NetworkMode") or ""),
        networks=tuple(networks),
        pid_mode=str(host.get("PidMode") or ""),
        ipc_mode=str(host.get("IpcMode") or ""),
        uts_mode=str(host.get("UTSMode") or ""),
        userns_mode=str(host.get("UsernsMode") or ""),
        mounts=_mounts(attrs.get("Mounts")),
        devices=tuple(
            str(d.get("PathOnHost", "")) if isinstance(d, Mapping) else str(d)
            for d in host.get("Devices") or ()
        ),
        ports=_ports(host.get("PortBindings")),
        restart_policy=str(restart.get("Name") or "no"),
        restart_max_retries=int(restart.get("MaximumRetryCount") or 0),
        healthcheck=_healthcheck(config),
        health_status=(state.get("Health") or {}).get("Status"),
        image_healthcheck=_healthcheck((image_attrs or {}).get("Config")),
    )


def network_facts_from_inspect(attrs: Mapping[str, Any]) -> NetworkFacts:
    """Facts from ``docker network inspect``; a bridge's interface is ``br-`` + 12 id digits."""
    options = attrs.get("Options") or {}
    configs = (attrs.get("IPAM") or {}).get("Config") or ()
    network_id = str(attrs.get("Id", ""))
    driver = str(attrs.get("Driver", ""))
    bridge = options.get(BRIDGE_NAME_OPTION) or (
        f"br-{network_id[:12]}" if driver == "bridge" else ""
    )
    return NetworkFacts(
        id=network_id,
        name=str(attrs.get("Name", "")),
        driver=driver,
        bridge=str(bridge),
        subnets=tuple(str(c["Subnet"]) for c in configs if c.get("Subnet")),
        gateways=tuple(str(c["Gateway"]) for c in configs if c.get("Gateway")),
        # Docker's default for a bridge is icc on: only an explicit "false" turns it off.
        icc=str(options.get(ICC_OPTION, "true")).lower() != "false",
        ipv6=bool(attrs.get("EnableIPv6")),
        internal=bool(attrs.get("Internal")),
    )


def daemon_facts_from_info(info: Mapping[str, Any]) -> DaemonFacts:
    """Facts from ``docker info``."""
    return DaemonFacts(
        server_version=str(info.get("ServerVersion", "")),
        live_restore=bool(info.get("LiveRestoreEnabled")),
        security_options=tuple(str(o) for o in info.get("SecurityOptions") or ()),
    )
