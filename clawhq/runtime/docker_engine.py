"""The :class:`~clawhq.runtime.base.Runtime` on Docker Engine, through the Docker SDK for Python.

With ``docker_volumes`` (workspace volumes and their disks), ``docker_archives`` (their files
as tar streams), ``docker_errors`` (engine errors become ClawHQ errors in
:func:`engine_errors`) and ``docker_parse`` (answers parsed), the only modules that import
``docker``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
from docker.models.containers import Container as SdkContainer
from docker.types import LogConfig

from clawhq.errors import EngineError
from clawhq.runtime import labels
from clawhq.runtime.base import (
    Container,
    ContainerSpec,
    ContainerStats,
    EngineEvent,
    LogLine,
    Runtime,
)
from clawhq.runtime.disks import DEFAULT_ROOT, HostDisks, remote_engine
from clawhq.runtime.docker_archives import DockerArchives
from clawhq.runtime.docker_errors import engine_errors
from clawhq.runtime.docker_files import file_archive
from clawhq.runtime.docker_parse import container_from_inspect, container_from_summary, parse_time
from clawhq.runtime.security import (
    ContainerSecurity,
    DaemonFacts,
    NetworkFacts,
    container_security_from_inspect,
    daemon_facts_from_info,
    network_facts_from_inspect,
)

log = logging.getLogger(__name__)

NO_ICC = {"com.docker.network.bridge.enable_icc": "false"}
_MANAGED = f"{labels.SERVICE}={labels.SERVICE_AGENT}"


class DockerRuntime(DockerArchives):
    """Agent containers on one Docker Engine (``DOCKER_HOST`` or the local socket).

    The API version is pinned (Docker 20.10's) so that building the client never needs the
    engine: ClawHQ starts, and answers 503s, while the engine is down. With ``instance_id``,
    containers, events and volumes are those labelled with that installation only.
    """

    API_VERSION = "1.41"

    def __init__(
        self,
        base_url: str | None = None,
        timeout: int = 60,
        *,
        instance_id: str | None = None,
        disk_dir: Path | None = None,
    ) -> None:
        with engine_errors("connect to Docker Engine"):
            options = {"timeout": timeout, "max_pool_size": 32, "version": self.API_VERSION}
            if base_url:
                self._client = docker.DockerClient(base_url=base_url, **options)
            else:
                self._client = docker.from_env(**options)
        self._api = self._client.api
        self.instance_id = instance_id
        self._scope: list[str] = [_MANAGED]
        if instance_id is not None:
            self._scope.append(f"{labels.INSTANCE}={instance_id}")
        self._disks = HostDisks(disk_dir or DEFAULT_ROOT)
        self._no_disks = remote_engine(base_url)

    def close(self) -> None:
        self._client.close()

    def ping(self) -> None:
        with engine_errors("reach Docker Engine"):
            self._client.ping()

    def ensure_network(self, name: str) -> str:
        with engine_errors(f"prepare network {name}"):
            try:
                network = self._client.networks.get(name)
            except docker.errors.NotFound:
                try:
                    network = self._client.networks.create(
                        name,
                        driver="bridge",
                        options=NO_ICC,
                        labels={labels.SERVICE: labels.SERVICE_AGENT, labels.NETWORK: "agents"},
                        check_duplicate=True,
                    )
                except docker.errors.APIError as exc:
                    if exc.status_code != 409:
                        raise
                    network = self._client.networks.get(name)  # another process won the race
                network.reload()
            config = (network.attrs.get("IPAM") or {}).get("Config") or [{}]
            options = network.attrs.get("Options") or {}
            if options.get("com.docker.network.bridge.enable_icc") != "false":
                raise EngineError(
                    f"network {name} exists but lets containers talk to each other "
                    "(enable_icc is not false); remove it so ClawHQ can recreate it"
                )
            return str(config[0].get("Gateway", ""))

    def create(self, spec: ContainerSpec) -> Container:
        with engine_errors(f"create container {spec.name}"):
            self._ensure_volume(spec.volume, spec.disk_bytes, spec.volume_labels(), spec.user)
            port = spec.port
            published = (
                {f"{port.container_port}/tcp": (port.host_ip, port.host_port)} if port else {}
            )
            created: SdkContainer = self._client.containers.create(
                spec.image,
                name=spec.name,
                hostname=spec.hostname or None,
                environment=dict(spec.env),
                labels={**spec.labels, labels.CONFIG_HASH: spec.config_hash()},
                user=spec.user,
                mem_limit=spec.limits.memory_bytes,
                memswap_limit=spec.limits.memory_bytes,
                cpu_quota=spec.limits.cpu_quota,
                cpu_period=spec.limits.cpu_period,
                pids_limit=spec.limits.pids_limit,
                read_only=True,
                tmpfs=dict(spec.tmpfs),
                cap_drop=["ALL"],
                security_opt=["no-new-privileges:true"],
                init=True,
                network=spec.network,
                dns=list(spec.dns) or None,
                ports=published,
                volumes={spec.volume: {"bind": spec.volume_path, "mode": "rw"}},
                log_config=LogConfig(
                    type="json-file",
                    config={"max-size": spec.log_max_size, "max-file": str(spec.log_max_files)},
                ),
                restart_policy={"Name": "no"},
            )
            return container_from_inspect(created.attrs)

    def put_file(
        self, container_id: str, path: str, content: bytes, *, owner: str, mode: int = 0o400
    ) -> None:
        folder, archive = file_archive(path, content, owner, mode)
        self._mount_workspaces(container_id)
        with engine_errors(f"put {path} into container {container_id[:12]}"):
            if not self._api.put_archive(container_id, folder, archive):
                raise EngineError(f"put {path} into container {container_id[:12]}: refused")

    def start(self, container_id: str) -> None:
        self._mount_workspaces(container_id)
        with engine_errors(f"start container {container_id[:12]}"):
            self._api.start(container_id)

    def stop(self, container_id: str, timeout: int) -> None:
        with engine_errors(f"stop container {container_id[:12]}"):
            try:
                self._api.stop(container_id, timeout=timeout)
            except docker.errors.NotFound:
                return

    def remove(self, container_id: str) -> bool:
        with engine_errors(f"remove container {container_id[:12]}"):
            try:
                self._api.remove_container(container_id, force=True)
            except docker.errors.NotFound:
                return False
            except docker.errors.APIError as exc:
                if exc.status_code == 409 and "already in progress" in str(exc.explanation):
                    return False
                raise
            return True

    def inspect(self, container_id: str) -> Container | None:
        with engine_errors(f"inspect container {container_id[:12]}"):
            try:
                return container_from_inspect(self._api.inspect_container(container_id))
            except docker.errors.NotFound:
                return None

    def list_managed(self, filters: Mapping[str, str] | None = None) -> list[Container]:
        wanted = [*self._scope, *(f"{k}={v}" for k, v in (filters or {}).items())]
        with engine_errors("list agent containers"):
            rows = self._api.containers(all=True, filters={"label": wanted})
        return [container_from_summary(row) for row in rows]

    def logs(self, container_id: str, tail: int) -> str:
        with engine_errors(f"read logs of {container_id[:12]}"):
            raw: bytes = self._api.logs(container_id, tail=tail, stdout=True, stderr=True)
        return raw.decode(errors="replace")

    def log_lines(
        self, container_id: str, *, tail: int, since: datetime | None = None
    ) -> list[LogLine]:
        options: dict[str, Any] = {"timestamps": True, "stdout": True, "stderr": True}
        if since is not None:
            options["since"] = since.timestamp()
        else:
            options["tail"] = tail
        with engine_errors(f"read logs of {container_id[:12]}"):
            raw: bytes = self._api.logs(container_id, **options)
        lines = []
        for row in raw.decode(errors="replace").splitlines():
            stamp, _, text = row.partition(" ")
            moment = parse_time(stamp)
            if moment is not None and (since is None or moment > since):
                lines.append(LogLine(moment, text))
        return lines

    def stats(self, container_id: str, *, quick: bool = False) -> ContainerStats:
        with engine_errors(f"read stats of {container_id[:12]}"):
            if quick:
                data = self._api.stats(container_id, stream=False, one_shot=True)
            else:
                data = self._api.stats(container_id, stream=False)
        cpu, pre = data.get("cpu_stats") or {}, data.get("precpu_stats") or {}
        cpu_total = int((cpu.get("cpu_usage") or {}).get("total_usage", 0))
        system_total = int(cpu.get("system_cpu_usage", 0))
        cpu_delta = cpu_total - int((pre.get("cpu_usage") or {}).get("total_usage", 0))
        system_delta = system_total - int(pre.get("system_cpu_usage", 0))
        cores = int(cpu.get("online_cpus") or 1)
        percent = (cpu_delta / system_delta) * cores * 100 if system_delta > 0 and pre else 0.0
        memory = data.get("memory_stats") or {}
        networks = data.get("networks") or {}
        return ContainerStats(
            cpu_percent=round(percent, 2),
            memory_bytes=int(memory.get("usage", 0)),
            memory_limit_bytes=int(memory.get("limit", 0)),
            pids=int((data.get("pids_stats") or {}).get("current", 0)),
            network_rx_bytes=sum(int(n.get("rx_bytes", 0)) for n in networks.values()),
            network_tx_bytes=sum(int(n.get("tx_bytes", 0)) for n in networks.values()),
            cpu_usage_ns=cpu_total,
            system_usage_ns=system_total,
            online_cpus=cores,
        )

    def events(self, since: datetime | None = None) -> Iterator[EngineEvent]:
        with engine_errors("follow engine events"):
            stream = self._api.events(
                since=since,
                decode=True,
                filters={"type": "container", "label": list(self._scope)},
            )
        with engine_errors("follow engine events"):
            for raw in stream:
                actor = raw.get("Actor") or {}
                attributes = actor.get("Attributes") or {}
                yield EngineEvent(
                    action=str(raw.get("Action", "")).split(":")[0],
                    container_id=str(actor.get("ID", "")),
                    labels={k: v for k, v in attributes.items() if k.startswith("clawhq.")},
                    time=datetime.fromtimestamp(raw.get("timeNano", 0) / 1e9, UTC),
                    attributes=attributes,
                )

    def image_exists(self, image: str) -> bool:
        with engine_errors(f"look up image {image}"):
            try:
                self._client.images.get(image)
            except docker.errors.ImageNotFound:
                return False
            return True

    def image_id(self, image: str) -> str | None:
        with engine_errors(f"look up image {image}"):
            try:
                return str(self._api.inspect_image(image)["Id"])
            except docker.errors.NotFound:
                return None

    def build_image(
        self, context: Path, dockerfile: str, tag: str, buildargs: Mapping[str, str] | None = None
    ) -> str:
        """Build an image from a local context; return its id. Build output goes to the log."""
        with engine_errors(f"build image {tag}"):
            try:
                image, output = self._client.images.build(
                    path=str(context),
                    dockerfile=dockerfile,
                    tag=tag,
                    buildargs=dict(buildargs or {}),
                    rm=True,
                    forcerm=True,
                )
            except docker.errors.BuildError as exc:
                lines = [str(step.get("stream", step.get("error", ""))) for step in exc.build_log]
                detail = "".join(lines)[-2000:]
                raise EngineError(f"build of {tag} failed: {exc.msg}\n{detail}") from None
            for step in output:
                text = str(step.get("stream", "")).strip()
                if text:
                    log.debug("build %s: %s", tag, text)
            return str(image.id)

    # -- security inspection (clawhq.runtime.security.SecurityInspector) ---------------------

    def security_facts(self, container_id: str) -> ContainerSecurity | None:
        with engine_errors(f"inspect container {container_id[:12]}"):
            try:
                attrs = self._api.inspect_container(container_id)
            except docker.errors.NotFound:
                return None
            try:
                image = self._api.inspect_image(attrs.get("Image", ""))
            except docker.errors.NotFound:
                image = None
        return container_security_from_inspect(attrs, image)

    def network_facts(self, name: str) -> NetworkFacts | None:
        with engine_errors(f"inspect network {name}"):
            try:
                return network_facts_from_inspect(self._api.inspect_network(name))
            except docker.errors.NotFound:
                return None

    def daemon_facts(self) -> DaemonFacts:
        with engine_errors("read engine info"):
            return daemon_facts_from_info(self._api.info())


if TYPE_CHECKING:  # mypy checks here that DockerRuntime is a whole Runtime
    _: type[Runtime] = DockerRuntime
