"""The runtime boundary. Only this package imports the Docker SDK."""

from clawhq.runtime.base import (
    Container,
    ContainerSpec,
    ContainerState,
    ContainerStats,
    EngineEvent,
    Limits,
    LogLine,
    PortBinding,
    Runtime,
    Volume,
)

__all__ = [
    "Container",
    "ContainerSpec",
    "ContainerState",
    "ContainerStats",
    "EngineEvent",
    "Limits",
    "LogLine",
    "PortBinding",
    "Runtime",
    "Volume",
]
