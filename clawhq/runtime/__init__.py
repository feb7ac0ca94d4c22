"""The runtime boundary. Only this package imports the Docker SDK."""

from clawhq.runtime.base import (
    AgentRuntime,
    Container,
    ContainerSpec,
    ContainerState,
    ContainerStats,
    ContainerTelemetry,
    DiskUsage,
    EngineAdmin,
    EngineEvent,
    Limits,
    LogLine,
    PortBinding,
    Runtime,
    Volume,
    VolumeStore,
    WorkspaceArchives,
)

__all__ = [
    "AgentRuntime",
    "Container",
    "ContainerSpec",
    "ContainerState",
    "ContainerStats",
    "ContainerTelemetry",
    "DiskUsage",
    "EngineAdmin",
    "EngineEvent",
    "Limits",
    "LogLine",
    "PortBinding",
    "Runtime",
    "Volume",
    "VolumeStore",
    "WorkspaceArchives",
]
