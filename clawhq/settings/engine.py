"""The container engine and the controller's rhythm: health checks, restarts, resyncs."""

from __future__ import annotations

from pydantic import AliasChoices, BaseModel, Field


class EngineSettings(BaseModel):
    docker_host: str | None = Field(
        default=None, validation_alias=AliasChoices("DOCKER_HOST", "docker_host")
    )
    supervise: bool = True
    health_interval: float = Field(default=30.0, gt=0)
    start_timeout: float = Field(default=120.0, gt=0)
    startup_poll_interval: float = Field(default=0.5, gt=0)
    stop_timeout: int = Field(default=10, ge=0, le=600)
    health_failure_threshold: int = Field(default=3, ge=1)
    restart_backoff_initial: float = Field(default=10.0, ge=0)
    restart_backoff_max: float = Field(default=300.0, ge=0)
    restart_backoff_reset: float = Field(default=600.0, ge=0)
    reconcile_interval: float = Field(default=60.0, gt=0)
    max_deploys_in_flight: int = Field(default=20, ge=1)
    stats_interval: float = Field(default=60.0, ge=0)
