"""What the API reads about agents besides their rows: the observed cache, drift, telemetry.

Container states and drift come from the controller's cache, never from the engine per
request. Logs and stats are the engine's own data, so those calls do go to the engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from clawhq.controller.observed import ObservedState
from clawhq.controller.planner import AgentView, up_to_date
from clawhq.controller.secrets import llm_access_problem
from clawhq.controller.spec import agent_image, differences, summary, volume_name
from clawhq.controller.specs import AgentSpecs
from clawhq.errors import Conflict
from clawhq.runtime import Container, ContainerStats, DiskUsage, LogLine, Runtime
from clawhq.settings import Settings
from clawhq.status import AgentStatus, DesiredState


class AgentViews:
    def __init__(
        self, settings: Settings, runtime: Runtime, observed: ObservedState, specs: AgentSpecs
    ) -> None:
        self._settings = settings
        self._runtime = runtime
        self._observed = observed
        self._specs = specs

    def container_state(self, agent_id: str, container_id: str | None) -> str:
        return self._observed.state(agent_id, container_id)

    def drift(self, row: Mapping[str, Any]) -> tuple[bool, list[str]]:
        """``(upToDate, what differs)`` for an agent row (a mapping of its columns).

        An agent with no container is up to date: its next start makes one from the spec.
        """
        container = self._observed.container(row["id"], row.get("container_id"))
        if container is None:
            return True, []
        image = agent_image(self._settings, row.get("image"), row.get("plan_image"))
        egress = row.get("plan_egress") or "open"
        fields = _Fields(row)
        view = AgentView(
            id=row["id"],
            status=AgentStatus(row["status"]),
            desired=DesiredState(row["desired_state"]),
            intended_hash=self._specs.intended_hash(
                fields, row.get("container_port"), image, egress
            ),
            intended_image_id=self._observed.image_id(image),
        )
        if up_to_date(view, container):
            return True, []
        spec = self._specs.spec_for(fields, row.get("container_port"), image=image, egress=egress)
        intended = summary(spec, self._observed.image_id(image))
        found = differences(intended, row.get("applied_config"))
        if not found and view.intended_image_id != getattr(container, "image_id", ""):
            found = ["image_id"]
        return False, found or ["(unknown)"]

    def llm_access(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """Whether the agent's model calls go through now, with which key, or why not (its
        plan may have changed since it started: the gateway decides at every call)."""
        own = bool(row.get("has_api_key"))
        problem = llm_access_problem(
            own, bool(row.get("plan_bundled_keys")), row["model_provider"], self._settings
        )
        return {
            "ok": problem is None,
            "key_source": "own" if own else "bundled",
            "code": problem.code if problem else None,
            "message": problem.message if problem else None,
        }

    def running_container(self, agent_id: str, container_id: str | None) -> Container:
        """The agent's container, which must exist (and is usually running)."""
        container = self._runtime.inspect(container_id) if container_id else None
        if container is None:
            raise Conflict("the agent has no container: deploy it first", code="agent_not_deployed")
        return container

    def logs(self, agent_id: str, container_id: str | None, tail: int) -> list[str]:
        container = self.running_container(agent_id, container_id)
        return self._runtime.logs(container.id, tail).splitlines()

    def log_lines(
        self, agent_id: str, container_id: str | None, tail: int, since: datetime | None = None
    ) -> tuple[list[LogLine], bool]:
        """Timestamped log lines and whether the container still runs."""
        container = self.running_container(agent_id, container_id)
        lines = self._runtime.log_lines(container.id, tail=tail, since=since)
        return lines, container.is_running

    def stats(self, agent_id: str, container_id: str | None) -> ContainerStats:
        container = self.running_container(agent_id, container_id)
        if not container.is_running:
            raise Conflict("the agent is not running", code="agent_not_running")
        return self._runtime.stats(container.id)

    def disk(self, agent_id: str) -> DiskUsage | None:
        """The agent's workspace use, when it has a capped disk (``None``: a plain volume)."""
        return self._runtime.disk_usage(volume_name(agent_id))


class _Fields:
    """An agent row (a mapping) seen as :class:`~clawhq.controller.spec.AgentFields`."""

    def __init__(self, row: Mapping[str, Any]) -> None:
        self.id: str = row["id"]
        self.user_id: str = row["user_id"]
        self.name: str = row["name"]
        self.model_provider: str = row["model_provider"]
        self.model: str = row["model"]
        self.channels: list[str] = list(row.get("channels") or [])
