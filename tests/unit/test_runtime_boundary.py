"""The runtime boundary: the role protocols, the classes that implement them, the fake's events.

The structural tests walk the protocols rather than a list of names, so a method added to a
protocol is checked on every implementation. They look in the classes' own bodies, because a
wrapper forwarding through ``__getattr__`` passes ``isinstance`` on Python 3.11 but not on 3.12+,
where ``runtime_checkable`` protocols no longer consult ``__getattr__``.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import pkgutil
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from unittest import mock

import pytest

import clawhq.runtime
from clawhq.errors import EngineUnavailable
from clawhq.observability.metrics import Metrics
from clawhq.runtime import labels
from clawhq.runtime.base import (
    AgentRuntime,
    ContainerSpec,
    ContainerState,
    ContainerTelemetry,
    EngineAdmin,
    EngineEvent,
    Limits,
    PortBinding,
    Runtime,
    VolumeStore,
    WorkspaceArchives,
)
from clawhq.runtime.docker_engine import DockerRuntime
from clawhq.runtime.docker_parse import container_from_inspect, container_from_summary
from clawhq.runtime.metered import MeteredRuntime
from clawhq.runtime.security import SecurityInspector
from tests.doubles.runtime import FakeRuntime

IMAGE = "clawhq-test-agent:latest"
ROLES = (
    AgentRuntime,
    ContainerTelemetry,
    VolumeStore,
    WorkspaceArchives,
    EngineAdmin,
    SecurityInspector,
)
NO_ENGINE = "unix:///nonexistent/docker.sock"  # building the client never needs the engine

#: What each runtime class claims to implement.
CLAIMS: dict[type, tuple[type, ...]] = {
    DockerRuntime: (Runtime,),
    MeteredRuntime: (Runtime,),
    FakeRuntime: (AgentRuntime, ContainerTelemetry, VolumeStore, WorkspaceArchives, EngineAdmin),
}


def is_protocol(cls: type) -> bool:
    return bool(getattr(cls, "_is_protocol", False)) and cls is not Protocol


def members(protocol: type) -> dict[str, Callable[..., Any]]:
    """Every method a protocol asks for, its bases' included."""
    found: dict[str, Callable[..., Any]] = {}
    for cls in reversed(protocol.__mro__):
        if is_protocol(cls):
            found.update(
                {n: v for n, v in vars(cls).items() if callable(v) and not n.startswith("_")}
            )
    return found


def own_attributes(cls: type) -> dict[str, Any]:
    """What a class and its bases define in their bodies, leaving out object and protocols
    (a protocol base would lend its ``...`` stubs)."""
    found: dict[str, Any] = {}
    for base in reversed(cls.__mro__):
        if base is not object and not is_protocol(base):
            found.update(vars(base))
    return found


def runtime_classes() -> list[type]:
    """Every class defined in the clawhq.runtime package that is not a protocol, and the
    test double of tests/doubles/runtime.py."""
    classes: list[type] = [FakeRuntime]
    for info in pkgutil.iter_modules(clawhq.runtime.__path__, "clawhq.runtime."):
        module = importlib.import_module(info.name)
        classes += [
            c
            for c in vars(module).values()
            if inspect.isclass(c) and c.__module__ == module.__name__ and not is_protocol(c)
        ]
    return classes


def test_runtime_combines_every_role() -> None:
    assert all(r in Runtime.__mro__ for r in ROLES)
    names = set(members(Runtime))
    assert names == set().union(*(members(r) for r in ROLES))
    # the walk sees each role's methods, so the checks below are not vacuous
    assert {"create", "close", "events", "logs", "list_volumes", "image_id"} <= names
    assert {"security_facts", "network_facts", "daemon_facts"} <= names
    assert "claim" not in names


@pytest.mark.parametrize("cls", list(CLAIMS), ids=lambda c: c.__name__)
def test_each_class_defines_what_it_claims_in_its_own_body(cls: type) -> None:
    attributes = own_attributes(cls)
    for protocol in CLAIMS[cls]:
        for name, wanted in members(protocol).items():
            assert name in attributes, f"{cls.__name__} does not define {name} ({protocol})"
            got = inspect.signature(attributes[name])
            assert list(got.parameters) == list(inspect.signature(wanted).parameters), (
                f"{cls.__name__}.{name}{got} differs from {protocol.__name__}"
            )


def test_no_runtime_class_forwards_through_getattr() -> None:
    classes = runtime_classes()
    assert {DockerRuntime, MeteredRuntime, FakeRuntime} <= set(classes)
    for cls in classes:
        ours = [
            vars(base) for base in cls.__mro__ if base.__module__.startswith(("clawhq.", "tests."))
        ]
        for name in ("__getattr__", "__getattribute__", "claim"):
            assert all(name not in body for body in ours), f"{cls.__name__} defines {name}"


def test_instances_are_what_they_claim() -> None:
    fake = FakeRuntime()
    metered = MeteredRuntime(fake, Metrics())
    docker = DockerRuntime(NO_ENGINE, timeout=1)
    try:
        for role in (*ROLES, Runtime):
            assert isinstance(metered, role), role
            assert isinstance(docker, role), role
        for role in CLAIMS[FakeRuntime]:
            assert isinstance(fake, role), role
        # the fake has no hardening to report, and says so
        assert not isinstance(fake, SecurityInspector)
        assert metered.inner is fake
    finally:
        docker.close()


# -- MeteredRuntime delegates every method -----------------------------------------------------

SAMPLE_ARGUMENTS: dict[str, Any] = {
    "spec": object(),
    "container_id": "c1",
    "timeout": 3,
    "filters": {labels.USER_ID: "u1"},
    "since": datetime(2026, 1, 1, tzinfo=UTC),
    "tail": 7,
    "quick": True,
    "name": "n1",
    "image": "img:1",
    "context": Path("ctx"),
    "dockerfile": "Dockerfile",
    "tag": "t:1",
    "buildargs": {"A": "1"},
    "path": "/home/openclaw/f",
    "content": b"{}",
    "owner": "1001:1001",
    "mode": 0o400,
    "archive": [b"tar"],
}


@pytest.mark.parametrize("name", sorted(members(Runtime)))
def test_metered_runtime_hands_each_call_to_inner(name: str) -> None:
    inner = mock.MagicMock()
    metered = MeteredRuntime(inner, Metrics())
    signature = inspect.signature(members(Runtime)[name])
    args, kwargs = [], {}
    for parameter in list(signature.parameters.values())[1:]:
        if parameter.kind is parameter.KEYWORD_ONLY:
            kwargs[parameter.name] = SAMPLE_ARGUMENTS[parameter.name]
        else:
            args.append(SAMPLE_ARGUMENTS[parameter.name])

    result = getattr(metered, name)(*args, **kwargs)

    forwarded = getattr(inner, name)
    forwarded.assert_called_once()
    called = signature.bind(None, *forwarded.call_args.args, **forwarded.call_args.kwargs)
    expected = signature.bind(None, *args, **kwargs)
    called.apply_defaults()
    expected.apply_defaults()
    assert called.arguments == expected.arguments
    if signature.return_annotation != "None":
        assert result is forwarded.return_value


def test_metered_runtime_counts_creates_and_removes() -> None:
    fake = FakeRuntime({IMAGE})
    metrics = Metrics()
    metered = MeteredRuntime(fake, metrics)

    def count(metric: str) -> float:
        return metrics.registry.get_sample_value(metric) or 0.0

    container = metered.create(spec_for("a1"))
    assert metered.remove(container.id) is True
    assert metered.remove(container.id) is False  # already gone: not counted twice
    assert count("clawhq_containers_created_total") == 1
    assert count("clawhq_containers_removed_total") == 1


# -- the installation id, given at construction -------------------------------------------------


def spec_for(agent_id: str, instance: str | None = None, image: str = IMAGE) -> ContainerSpec:
    found = {labels.SERVICE: labels.SERVICE_AGENT, labels.USER_ID: "u1", labels.AGENT_ID: agent_id}
    if instance is not None:
        found[labels.INSTANCE] = instance
    return ContainerSpec(
        name=f"agent-{agent_id}",
        image=image,
        env={},
        labels=found,
        user="1001:1001",
        limits=Limits(
            memory_bytes=64 * 1024**2, cpu_quota=50_000, cpu_period=100_000, pids_limit=32
        ),
        port=PortBinding("127.0.0.1", 19000, 18789),
        network="agents",
        volume=f"workspace-{agent_id}",
        volume_path="/home/openclaw",
        log_max_size="1m",
        log_max_files=1,
    )


@pytest.mark.parametrize(("instance_id", "seen"), [("mine", ["a1"]), (None, ["a1", "a2", "a3"])])
def test_fake_scoped_to_an_installation_lists_only_its_own(
    instance_id: str | None, seen: list[str]
) -> None:
    fake = FakeRuntime({IMAGE}, instance_id=instance_id)
    fake.create(spec_for("a1", "mine"))
    fake.create(spec_for("a2", "theirs"))
    fake.create(spec_for("a3"))
    assert [c.agent_id for c in fake.list_managed()] == seen
    assert [c.agent_id for c in fake.list_managed({labels.AGENT_ID: "a1"})] == ["a1"]
    assert [v.agent_id for v in fake.list_volumes()] == seen


def test_docker_runtime_scopes_listing_volumes_and_events_to_its_instance() -> None:
    runtime = DockerRuntime(NO_ENGINE, timeout=1, instance_id="mine")
    runtime._api = mock.MagicMock()  # type: ignore[method-assign]
    runtime._api.containers.return_value = []
    runtime._api.volumes.return_value = {"Volumes": []}
    runtime._api.events.return_value = iter(())
    try:
        assert runtime.instance_id == "mine"
        runtime.list_managed({labels.AGENT_ID: "a1"})
        runtime.list_volumes()
        list(runtime.events())
        wanted = [
            f"{labels.SERVICE}={labels.SERVICE_AGENT}",
            f"{labels.INSTANCE}=mine",
        ]
        assert runtime._api.containers.call_args.kwargs["filters"] == {
            "label": [*wanted, f"{labels.AGENT_ID}=a1"]
        }
        assert runtime._api.volumes.call_args.kwargs["filters"] == {"label": wanted}
        assert runtime._api.events.call_args.kwargs["filters"]["label"] == wanted
    finally:
        runtime.close()


# -- image ids ----------------------------------------------------------------------------------


def test_fake_image_ids() -> None:
    fake = FakeRuntime({IMAGE})
    default = "sha256:" + hashlib.sha256(IMAGE.encode()).hexdigest()
    assert fake.image_id(IMAGE) == default
    assert fake.image_id("missing:1") is None
    assert fake.create(spec_for("a1")).image_id == default

    rebuilt = fake.build_image(Path("ctx"), "Dockerfile", IMAGE)
    assert rebuilt.startswith("sha256:") and rebuilt != default
    assert fake.image_id(IMAGE) == rebuilt  # the tag moved: new containers differ from old
    assert fake.create(spec_for("a2")).image_id == rebuilt
    assert fake.inspect("agent-a1").image_id == default  # type: ignore[union-attr]


def test_docker_answers_give_the_image_id() -> None:
    inspected = container_from_inspect(
        {
            "Id": "c1",
            "Name": "/agent",
            "Image": "sha256:" + "a" * 64,
            "Config": {"Image": IMAGE, "Labels": {}},
            "State": {"Status": "running"},
        }
    )
    assert inspected.image == IMAGE and inspected.image_id == "sha256:" + "a" * 64
    listed = container_from_summary(
        {"Id": "c1", "Names": ["/agent"], "Image": IMAGE, "ImageID": "sha256:" + "b" * 64}
    )
    assert listed.image == IMAGE and listed.image_id == "sha256:" + "b" * 64
    assert container_from_summary({"Id": "c1"}).image_id == ""


# -- the fake's scripted event stream ----------------------------------------------------------


def take(stream: Iterator[EngineEvent], count: int, timeout: float = 5) -> list[EngineEvent]:
    """The next ``count`` events; fails (rather than blocking for ever) when they do not come."""
    got: list[EngineEvent] = []

    def follow() -> None:
        for event in stream:
            got.append(event)
            if len(got) == count:
                return

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    follower.join(timeout)
    assert len(got) == count, f"got only {actions(got)}"
    return got


def actions(events: list[EngineEvent]) -> list[str]:
    return [e.action for e in events]


def test_fake_emits_the_engines_events_as_containers_change() -> None:
    fake = FakeRuntime({IMAGE})
    stream = fake.events()
    before = datetime.now(UTC)
    one = fake.create(spec_for("a1"))
    fake.start(one.id)
    fake.stop(one.id, timeout=1)
    fake.stop(one.id, timeout=1)  # not running: no second die
    fake.start(one.id)
    fake.crash(one.id, exit_code=137, oom=True)
    fake.start(one.id)
    fake.remove(one.id)  # running: killed, then destroyed

    seen = take(stream, 9)
    assert actions(seen) == [
        "create", "start", "die", "start", "oom", "die", "start", "die", "destroy",
    ]  # fmt: skip
    assert all(e.container_id == one.id for e in seen)
    assert all(e.labels[labels.AGENT_ID] == "a1" for e in seen)
    assert all(before <= e.time <= datetime.now(UTC) for e in seen)
    assert seen[2].attributes["exitCode"] == "0"
    assert seen[5].attributes["exitCode"] == "137"
    assert seen[0].attributes["name"] == "agent-a1"
    fake.close()
    assert list(stream) == []


def test_tests_push_their_own_events_and_close_ends_every_stream() -> None:
    fake = FakeRuntime({IMAGE})
    first, second = fake.events(), fake.events()
    event = EngineEvent(
        "health_status",
        "c1",
        {labels.SERVICE: labels.SERVICE_AGENT},
        datetime.now(UTC),
        {"health_status": "unhealthy"},
    )
    fake.emit(event)
    fake.emit(EngineEvent("die", "c2", {}, datetime.now(UTC)))  # not an agent's: filtered out
    assert take(first, 1) == [event] and take(second, 1) == [event]

    ended: list[list[EngineEvent]] = []
    follower = threading.Thread(target=lambda: ended.append(list(first)), daemon=True)
    follower.start()
    threading.Timer(0.1, fake.close).start()
    follower.join(timeout=5)
    assert ended == [[]]  # the iterator blocked, then stopped at close()
    with pytest.raises(StopIteration):
        next(second)

    # a stream started after close() is a new one, and sees only what comes after it
    third = fake.events()
    fake.create(spec_for("a1"))
    assert actions(take(third, 1)) == ["create"]
    fake.close()


def test_each_stream_sees_the_events_after_it_began_or_from_since() -> None:
    fake = FakeRuntime({IMAGE})
    early = fake.events()
    one = fake.create(spec_for("a1"))
    started_at = datetime.now(UTC)
    fake.start(one.id)
    late = fake.events()
    fake.stop(one.id, timeout=1)
    replay = fake.events(since=started_at - timedelta(microseconds=1))

    assert actions(take(early, 3)) == ["create", "start", "die"]
    assert actions(take(late, 1)) == ["die"]
    assert actions(take(replay, 2)) == ["start", "die"]
    fake.close()


def test_fake_streams_only_its_installations_events() -> None:
    fake = FakeRuntime({IMAGE}, instance_id="mine")
    stream = fake.events()
    fake.create(spec_for("theirs", "theirs"))
    mine = fake.create(spec_for("mine", "mine"))
    [event] = take(stream, 1)
    assert event.container_id == mine.id
    fake.close()


def test_an_unreachable_fake_engine_breaks_the_stream() -> None:
    fake = FakeRuntime({IMAGE})
    fake.reachable = False
    with pytest.raises(EngineUnavailable):
        fake.events()

    fake.reachable = True
    stream = fake.events()
    raised: list[BaseException] = []

    def follow() -> None:
        try:
            for _ in stream:
                pass
        except EngineUnavailable as exc:
            raised.append(exc)

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    threading.Timer(0.1, lambda: setattr(fake, "reachable", False)).start()
    follower.join(timeout=5)
    assert len(raised) == 1


def test_fake_container_states_follow_the_calls() -> None:
    fake = FakeRuntime({IMAGE})
    one = fake.create(spec_for("a1"))
    fake.start(one.id)
    assert fake.inspect(one.id).state is ContainerState.RUNNING  # type: ignore[union-attr]
    fake.crash(one.id, exit_code=1)
    assert fake.inspect(one.id).exit_code == 1  # type: ignore[union-attr]
