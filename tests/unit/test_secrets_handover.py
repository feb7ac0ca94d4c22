# ruff: noqa: F811 (the fixtures of test_controller, imported, are the tests' arguments)
"""ClawHQ hands an agent's secrets to its container as a file put into it before every start
(never in its env), with new secrets each time; a hand-over that fails fails the start cleanly.

Over FakeRuntime, whose ``start`` takes the files put since the last start (as the image's
entrypoint takes its secrets file): ``started_with[id]`` is what each start was handed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace

import pytest

from clawhq.controller.spec import SECRET_ENV
from clawhq.credentials import hash_token
from clawhq.db.models import Agent
from clawhq.errors import EngineError
from clawhq.runtime import ContainerState, labels
from clawhq.runtime.docker_files import file_archive
from clawhq.status import AgentStatus as S
from tests.doubles.runtime import FakeRuntime
from tests.unit.test_controller import (  # noqa: F401 (fixtures)
    BACKOFF,
    World,
    deploy_running,
    fail_probes,
    fake,
    new_agent,
    no_jitter,
    world,
    world_factory,
)

PATH = "/home/openclaw/.clawhq-secrets.json"


def handed(fake: FakeRuntime, container_id: str) -> list[dict[str, str]]:
    """The secrets each start of the container was handed (one file per start, checked)."""
    found = []
    for files in fake.started_with.get(container_id, []):
        assert list(files) == [PATH], files
        assert (files[PATH].owner, files[PATH].mode) == ("1001:1001", 0o400)
        found.append(json.loads(files[PATH].content))
    return found


def assert_current(world: World, agent_id: str, secrets: dict[str, str]) -> None:
    """These are the secrets ClawHQ accepts from the agent now (digests, the sealed identity)."""
    row = world.agent(agent_id)
    assert row.llm_token_hash == hash_token(secrets["CLAWHQ_API_KEY"])
    assert row.webhook_token_hash == hash_token(secrets["CLAWHQ_WEBHOOK_TOKEN"])
    with world.context.sessions() as session:
        agent = session.get(Agent, agent_id)
        assert agent is not None and agent.proxy_identity_ciphertext is not None
        from clawhq.crypto import Sealed

        sealed = Sealed(agent.proxy_identity_ciphertext, agent.proxy_identity_key_id or "")
        identity = world.context.keyring.open(sealed, agent.proxy_identity_context)
    assert identity == secrets["CLAWHQ_PROXY_IDENTITY"]


def assert_env_holds_no_secret(fake: FakeRuntime, container_id: str) -> None:
    spec = fake.specs[container_id]
    assert not SECRET_ENV & set(spec.env)
    values = [v for start in handed(fake, container_id) for v in start.values()]
    assert values and not [v for v in spec.env.values() for s in values if s in v]
    assert spec.env["CLAWHQ_SECRETS_FILE"] == PATH
    assert fake.containers[container_id].labels[labels.SECRETS_FILE] == PATH


def test_a_deploy_hands_the_file_before_the_start_and_the_env_holds_no_secret(
    world: World, fake: FakeRuntime
) -> None:
    agent_id, container_id = deploy_running(world)
    (first,) = handed(fake, container_id)
    assert set(first) == {
        "CLAWHQ_API_KEY",
        "CLAWHQ_WEBHOOK_TOKEN",
        "CLAWHQ_PROXY_IDENTITY",
        "OPENCLAW_GATEWAY_PASSWORD",
    }
    assert first["CLAWHQ_API_KEY"].startswith("chqllm_")
    assert_current(world, agent_id, first)
    assert_env_holds_no_secret(fake, container_id)
    assert "sk-test-0123456789" not in str(first) + str(fake.specs[container_id])
    assert fake.files == {}  # taken by the start: nothing left waiting


@pytest.mark.parametrize("down", ["crashed", "unhealthy"])
def test_every_supervisor_restart_of_the_same_container_hands_new_secrets(
    world: World, fake: FakeRuntime, down: str
) -> None:
    agent_id, container_id = deploy_running(world)
    if down == "crashed":
        world.crash(container_id, agent_id)
        world.settle(BACKOFF + 0.5)
    else:  # still running: stopped first, then handed its file, then started
        fail_probes(world, agent_id)
        world.settle(BACKOFF + 0.5)
        world.probe.healthy = True
        world.settle(0.5)
    assert world.state(agent_id) == (S.RUNNING, 1, container_id)
    first, second = handed(fake, container_id)
    assert not set(first.values()) & set(second.values())  # every secret rotated
    assert_current(world, agent_id, second)
    assert_env_holds_no_secret(fake, container_id)


def test_a_start_during_the_backoff_hands_the_file_too(world: World, fake: FakeRuntime) -> None:
    agent_id, container_id = deploy_running(world)
    world.crash(container_id, agent_id)
    assert world.agent(agent_id).status is S.RESTARTING
    assert world.context.operations.start(agent_id).status is S.DEPLOYING  # the same container
    world.settle(0.5)
    assert world.state(agent_id) == (S.RUNNING, 0, container_id)
    first, second = handed(fake, container_id)
    assert first["CLAWHQ_API_KEY"] != second["CLAWHQ_API_KEY"]
    assert_current(world, agent_id, second)


def test_a_container_created_by_a_process_that_died_is_started_with_new_secrets(
    world_factory: Callable[..., World], fake: FakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The secrets of a start die with the process that made them: the next start makes new."""
    one, two = world_factory(), world_factory()
    agent_id = new_agent(one)

    class Died(Exception):
        pass

    def died(container_id: str) -> None:
        raise Died

    monkeypatch.setattr(fake, "start", died)
    one.context.operations.deploy(agent_id)  # created, handed its file, never started
    container_id = one.agent(agent_id).container_id
    assert container_id is not None
    assert fake.containers[container_id].state is ContainerState.CREATED
    monkeypatch.undo()
    two.context.sources.resync()
    two.settle(0.5)
    assert two.state(agent_id) == (S.RUNNING, 0, container_id)
    (secrets,) = handed(fake, container_id)
    assert_current(two, agent_id, secrets)


def test_a_failed_hand_over_fails_the_deploy_and_leaves_nothing(
    world: World, fake: FakeRuntime
) -> None:
    agent_id = new_agent(world)
    fake.fail["put_file"] = EngineError("put the secrets file: no space left on device")
    with pytest.raises(EngineError):  # the deploy answers with the engine's error
        world.context.operations.deploy(agent_id)
    world.settle(0.5)
    row = world.agent(agent_id)
    assert row.status is S.ERROR
    assert "no space left on device" in (row.last_error or "")
    assert (row.container_id, row.container_port, row.llm_token_hash) == (None, None, None)
    assert fake.containers == {} and fake.started_with == {}
    assert world.leases(agent_id) == []


def test_a_failed_hand_over_on_a_restart_waits_for_the_next_one(
    world: World, fake: FakeRuntime
) -> None:
    agent_id, container_id = deploy_running(world)
    world.crash(container_id, agent_id)
    fake.fail["put_file"] = EngineError("put the secrets file: volume gone")
    world.settle(BACKOFF + 0.5)
    row = world.agent(agent_id)
    assert row.status is S.RESTARTING and row.next_restart_at is not None
    assert "volume gone" in (row.last_error or "")
    assert fake.containers[container_id].state is ContainerState.EXITED  # never started
    assert len(fake.started_with[container_id]) == 1
    del fake.fail["put_file"]
    world.settle(2 * BACKOFF + 0.5)
    assert world.state(agent_id)[0] is S.RUNNING
    assert_current(world, agent_id, handed(fake, container_id)[-1])


def test_a_container_of_an_earlier_clawhq_restarts_with_its_env_and_no_file(
    world: World, fake: FakeRuntime
) -> None:
    """Its secrets are in its env (and its hashes stay valid): a file it does not read would
    stay on the volume, so none is put; a deploy or rollout moves it to the file."""
    agent_id, container_id = deploy_running(world)
    old = fake.containers[container_id]
    fake.containers[container_id] = replace(
        old, labels={k: v for k, v in old.labels.items() if k != labels.SECRETS_FILE}
    )
    before = world.agent(agent_id).llm_token_hash
    world.crash(container_id, agent_id)
    world.settle(BACKOFF + 0.5)
    assert world.state(agent_id) == (S.RUNNING, 1, container_id)
    assert fake.started_with[container_id][-1] == {}
    assert world.agent(agent_id).llm_token_hash == before


def test_the_runtime_refuses_a_file_in_a_running_container_or_off_the_volume(
    world: World, fake: FakeRuntime
) -> None:
    _, container_id = deploy_running(world)
    with pytest.raises(EngineError, match="running"):
        fake.put_file(container_id, PATH, b"{}", owner="1001:1001")
    fake.stop(container_id, 1)
    with pytest.raises(EngineError, match="read-only"):
        fake.put_file(container_id, "/etc/secrets.json", b"{}", owner="1001:1001")


def test_the_file_travels_as_a_tar_of_one_regular_file_owned_by_the_agent() -> None:
    import io
    import tarfile

    folder, archive = file_archive(PATH, b'{"a": "b"}', "1001:1001", 0o400)
    assert folder == "/home/openclaw"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        (member,) = tar.getmembers()
        assert (member.name, member.isreg(), member.mode) == (".clawhq-secrets.json", True, 0o400)
        assert (member.uid, member.gid, member.size) == (1001, 1001, 10)
    for bad in ("relative/file", "/home/openclaw/", "/"):
        with pytest.raises(EngineError):
            file_archive(bad, b"", "1001:1001", 0o400)
