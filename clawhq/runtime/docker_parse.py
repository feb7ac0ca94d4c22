"""Docker Engine API answers as typed containers: pure, so tested on recorded data."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from clawhq.runtime.base import Container, ContainerState, PortBinding


def parse_time(value: str | None) -> datetime | None:
    """An engine timestamp (RFC 3339, nanoseconds) in UTC; ``None`` for Docker's zero time."""
    if not value or value.startswith("0001-01-01"):
        return None
    # Docker gives nanoseconds; Python parses microseconds.
    head, _, tail = value.rstrip("Z").partition(".")
    fraction = (tail[:6] if tail else "0").ljust(6, "0")
    return datetime.fromisoformat(f"{head}.{fraction}").replace(tzinfo=UTC)


def _bindings(port_map: Mapping[str, Any] | None) -> tuple[PortBinding, ...]:
    found = []
    for key, hosts in (port_map or {}).items():
        for host in hosts or ():
            found.append(PortBinding(host["HostIp"], int(host["HostPort"]), int(key.split("/")[0])))
    return tuple(found)


def _address(settings: Mapping[str, Any] | None) -> str:
    """The container's address on its (one) network; "" when it has none yet."""
    for network in ((settings or {}).get("Networks") or {}).values():
        if network and network.get("IPAddress"):
            return str(network["IPAddress"])
    return ""


def container_from_inspect(attrs: Mapping[str, Any]) -> Container:
    """A :class:`Container` from ``docker inspect`` data."""
    state = attrs.get("State") or {}
    config = attrs.get("Config") or {}
    health = state.get("Health") or {}
    return Container(
        id=attrs["Id"],
        name=attrs.get("Name", "").lstrip("/"),
        image=config.get("Image", ""),
        state=ContainerState(state.get("Status", "dead")),
        labels=config.get("Labels") or {},
        exit_code=state.get("ExitCode"),
        oom_killed=bool(state.get("OOMKilled")),
        error=state.get("Error") or "",
        started_at=parse_time(state.get("StartedAt")),
        finished_at=parse_time(state.get("FinishedAt")),
        health=health.get("Status"),
        ports=_bindings((attrs.get("HostConfig") or {}).get("PortBindings")),
        image_id=str(attrs.get("Image") or ""),
        address=_address(attrs.get("NetworkSettings")),
    )


def container_from_summary(item: Mapping[str, Any]) -> Container:
    """A :class:`Container` from one row of the list endpoint (no exit details there)."""
    names = item.get("Names") or ["/"]
    ports = tuple(
        PortBinding(p.get("IP", ""), int(p["PublicPort"]), int(p["PrivatePort"]))
        for p in item.get("Ports") or ()
        if p.get("PublicPort")
    )
    return Container(
        id=item["Id"],
        name=names[0].lstrip("/"),
        image=item.get("Image", ""),
        state=ContainerState(item.get("State", "dead")),
        labels=item.get("Labels") or {},
        ports=ports,
        image_id=str(item.get("ImageID") or ""),
        address=_address(item.get("NetworkSettings")),
    )
