"""ClawHQ's credentials in the real OpenClaw image: what the agent's uid can read of them.

The agent's tools run as the gateway's uid (1001), and every process of that uid can read the
environment of every other (``/proc/<pid>/environ``) and search the volume and /tmp. The image
runs hardened as ClawHQ runs it (``init=True``: Docker's init is PID 1, the image's tini below
it), on a bridge with a stand-in webhook on its gateway address, with planted secrets. Once a
heartbeat has arrived (the reporter works), a scan as uid 1001 says which processes hold them:

* the webhook token (the reporter's bearer): no process of the image (the entrypoint hands it
  to its second stage through a file it removes before the gateway starts); passed as the
  container's env it stays in the two init processes, which nothing in the image can clean;
  passed in ``CLAWHQ_SECRETS_FILE`` it is nowhere at all;
* the LLM token: the gateway and the processes it starts (by design: it is the gateway's
  provider key), and else only the init processes when it comes as env.

Nothing here leaves the machine: the webhook and the model are stand-ins on the host.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.helpers import scratch_bridge, sdk
from tests.integration.test_openclaw_image import HARDENING, agent_env, derived_image
from tests.standins.model import StandIn, serving_model

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]

WEBHOOK_TOKEN = "whk-planted-" + "W3bH00k" * 5
LLM_TOKEN = "chqllm_planted" + "L1mT0k" * 5
IDENTITY = "proxy-identity-planted-0123456789abcdefghij"
PASSWORD = "gateway-password-planted-0123456789"
SECRETS = {
    "CLAWHQ_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
    "CLAWHQ_API_KEY": LLM_TOKEN,
    "CLAWHQ_PROXY_IDENTITY": IDENTITY,
    "OPENCLAW_GATEWAY_PASSWORD": PASSWORD,
}
SECRETS_FILE = "/home/openclaw/.clawhq-secrets.json"
#: The init processes: Docker's (ClawHQ's ``init=True``) and the image's own tini below it.
INITS = ("/sbin/docker-init", "/usr/bin/tini")
#: An execute-only node the entrypoint runs its second stage (the reporter) from, if present.
PRIVATE_NODE = "/usr/local/libexec/clawhq-node"

# Every process's pid, parent, command line and environment, as the agent's uid sees them.
SCAN = """
import { readdirSync, readFileSync } from "node:fs";
const read = (pid, name) => {
  try { return readFileSync(`/proc/${pid}/${name}`, "utf8"); } catch { return null; }
};
const found = [];
for (const pid of readdirSync("/proc").filter((name) => /^\\d+$/.test(name))) {
  if (Number(pid) === process.pid) continue;
  const stat = read(pid, "stat");
  if (stat === null) continue; // gone meanwhile
  const environ = read(pid, "environ");
  found.push({
    pid: Number(pid),
    ppid: Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]),
    cmdline: (read(pid, "cmdline") ?? "").split("\\0").filter(Boolean),
    environ: environ === null ? null : environ.split("\\0").filter(Boolean),
  });
}
console.log(JSON.stringify(found));
"""


@pytest.fixture
def bridge() -> Iterator[tuple[str, str]]:
    """A bridge network like ClawHQ's (no traffic between containers): its name and gateway IP."""
    with scratch_bridge("clawhq-test-secrets", "openclaw-secrets") as found:
        yield found


@pytest.fixture(scope="module")
def private_node_image(
    docker_runtime: Any, openclaw_image: str, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """The image with an execute-only copy of node at PRIVATE_NODE (not in the Dockerfile yet:
    see docs/openclaw-image.md, "Secrets in the container")."""
    return derived_image(
        docker_runtime,
        tmp_path_factory.mktemp("private-node"),
        openclaw_image,
        "clawhq-openclaw:test-private-node",
        f"USER root\nRUN install -D -m 0111 /usr/local/bin/node {PRIVATE_NODE}\nUSER 1001:1001",
    )


@pytest.fixture
def volume() -> Iterator[str]:
    name = f"clawhq-test-secrets-{uuid.uuid4().hex[:10]}"
    sdk().volumes.create(name, labels={"clawhq.test": "openclaw-secrets"})
    yield name
    sdk().volumes.get(name).remove(force=True)


def as_agent(container: Any, *command: str) -> tuple[int, str]:
    """``command`` as the agent's uid, with an empty environment of its own (``docker exec``
    would otherwise give it the container's, secrets included)."""
    result = container.exec_run(["env", "-i", *command], user="1001:1001")
    return result.exit_code, result.output.decode(errors="replace")


def create(image: str, volume: str, bridge: tuple[str, str], base: str, *, file: bool) -> Any:
    """The image as ClawHQ runs it (created, not started), reporting to the stand-in on the
    bridge's gateway; the planted secrets in its env, or only the name of their file."""
    network, proxy_address = bridge
    env = agent_env(
        CLAWHQ_MODEL_PROVIDER="deepseek",
        CLAWHQ_MODEL="deepseek-chat",
        CLAWHQ_PROXY_ADDRESSES=proxy_address,
        CLAWHQ_LLM_BASE_URL=base,
        CLAWHQ_WEBHOOK_URL=f"{base}/hook",
        CLAWHQ_HEARTBEAT_INTERVAL="2",
        CLAWHQ_USAGE_INTERVAL="0",
        **SECRETS,
    )
    if file:
        env = {k: v for k, v in env.items() if k not in SECRETS}
        env["CLAWHQ_SECRETS_FILE"] = SECRETS_FILE
    return sdk().containers.create(
        image,
        environment=env,
        volumes={volume: {"bind": "/home/openclaw", "mode": "rw"}},
        labels={"clawhq.test": "openclaw-secrets"},
        **{**HARDENING, "network_mode": network},
    )


def put_secrets_file(container: Any, secrets: dict[str, str]) -> None:
    """What ClawHQ would do before each start: the secrets as a 0600 file of the agent's uid on
    the volume (the one place Docker writes to before a start on a read-only root)."""
    data = json.dumps(secrets).encode()
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        info = tarfile.TarInfo(SECRETS_FILE.rsplit("/", 1)[1])
        info.size, info.uid, info.gid, info.mode = len(data), 1001, 1001, 0o600
        tar.addfile(info, io.BytesIO(data))
    assert container.put_archive("/home/openclaw", archive.getvalue())


def wait_for_heartbeat(container: Any, timeout: float = 240) -> list[dict[str, Any]]:
    """The webhook posts once the gateway answers its health path (the reporter at work)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hooks = [r for r in StandIn.requests if r["path"] == "/hook"]
        if any(h.get("type") == "heartbeat" for h in hooks):
            return hooks
        container.reload()
        if container.status == "exited":
            break
        time.sleep(1)
    logs = container.logs().decode(errors="replace")
    raise AssertionError(f"no heartbeat reached the stand-in webhook:\n{logs[-3000:]}")


def scan(container: Any) -> list[dict[str, Any]]:
    code, out = as_agent(container, "/usr/local/bin/node", "--input-type=module", "-e", SCAN)
    assert code == 0, out
    processes: list[dict[str, Any]] = json.loads(out)
    # The agent's uid reads every process's environment (the scan sees them all) but that of a
    # process exec'd from the execute-only node: the kernel made it non-dumpable.
    unreadable = [p for p in processes if p["environ"] is None]
    assert processes and all(p["cmdline"][:1] == [PRIVATE_NODE] for p in unreadable), processes
    for p in unreadable:
        p["environ"] = []
    return processes


def holders(processes: list[dict[str, Any]], secret: str) -> set[int]:
    return {p["pid"] for p in processes if any(secret in v for v in p["environ"])}


def gateway_tree(processes: list[dict[str, Any]]) -> set[int]:
    """The gateway (the entrypoint's child, renamed ``openclaw-gateway``) and what it started."""
    gateways = {p["pid"] for p in processes if p["cmdline"][:1] == ["openclaw-gateway"]}
    assert len(gateways) == 1, [p["cmdline"] for p in processes]
    tree = set(gateways)
    grew = True
    while grew:
        below = {p["pid"] for p in processes if p["ppid"] in tree}
        grew = not below <= tree
        tree |= below
    return tree


def entrypoint(processes: list[dict[str, Any]]) -> dict[str, Any]:
    """The entrypoint, which runs the reporter: its second stage once the gateway runs."""
    found = [p for p in processes if "/opt/clawhq/entrypoint.mjs" in p["cmdline"][1:2]]
    assert len(found) == 1, [p["cmdline"] for p in processes]
    return found[0]


def files_holding(container: Any, *secrets: str) -> list[str]:
    """The files on the volume and in /tmp that hold any of ``secrets``."""
    patterns = [arg for secret in secrets for arg in ("-e", secret)]
    code, out = as_agent(container, "grep", "-rlsF", *patterns, "/home/openclaw", "/tmp")
    assert code in (0, 1), out  # 1: nothing found
    return out.split()


def assert_reported(hooks: list[dict[str, Any]]) -> None:
    assert all(h["auth"] == f"Bearer {WEBHOOK_TOKEN}" for h in hooks), hooks


def test_secrets_passed_as_env_stay_only_in_the_init_processes(
    openclaw_image: str, volume: str, bridge: tuple[str, str]
) -> None:
    """How ClawHQ passes them today: the container's env. The entrypoint and the reporter hold
    none in their environ; the init processes (exec'd by Docker with the container's env) still
    do, which only ClawHQ can change (CLAWHQ_SECRETS_FILE, the next test)."""
    with serving_model(bridge[1]) as base:
        container = create(openclaw_image, volume, bridge, base, file=False)
        try:
            container.start()
            assert_reported(wait_for_heartbeat(container))
            processes = scan(container)
            inits = {p["pid"] for p in processes if p["cmdline"][:1] and p["cmdline"][0] in INITS}
            assert 1 in inits and len(inits) == 2, [p["cmdline"] for p in processes]
            gateway = gateway_tree(processes)
            assert holders(processes, WEBHOOK_TOKEN) == inits
            assert holders(processes, IDENTITY) == inits
            assert holders(processes, LLM_TOKEN) == inits | gateway
            assert holders(processes, PASSWORD) == inits | gateway
            llm_names = {
                v.split("=", 1)[0]
                for p in processes
                if p["pid"] in gateway
                for v in p["environ"]
                if LLM_TOKEN in v
            }
            assert llm_names == {"DEEPSEEK_API_KEY"}  # the provider's key, not ClawHQ's name
            reporter = entrypoint(processes)  # its second stage, exec'd without the secrets
            assert "--stage2" in reporter["cmdline"]
            assert not [v for v in reporter["environ"] if any(s in v for s in SECRETS.values())]
            assert files_holding(container, WEBHOOK_TOKEN, LLM_TOKEN) == []
            assert as_agent(container, "bash", "-c", "ls -d /tmp/clawhq-entrypoint-*")[0] != 0
        finally:
            container.remove(force=True)


def test_secrets_passed_in_a_file_are_nowhere_but_in_the_gateway(
    openclaw_image: str, volume: str, bridge: tuple[str, str]
) -> None:
    """The secrets in CLAWHQ_SECRETS_FILE, put on the volume before the start: read once and
    removed. No process holds the webhook token (PID 1 included), the LLM token is only in the
    gateway's processes, and the reporter still reports."""
    with serving_model(bridge[1]) as base:
        container = create(openclaw_image, volume, bridge, base, file=True)
        try:
            env = container.attrs["Config"]["Env"]
            assert not [v for v in env if any(s in v for s in SECRETS.values())]
            put_secrets_file(container, SECRETS)
            container.start()
            assert_reported(wait_for_heartbeat(container))
            processes = scan(container)
            gateway = gateway_tree(processes)
            assert holders(processes, WEBHOOK_TOKEN) == set()
            assert holders(processes, IDENTITY) == set()
            assert holders(processes, LLM_TOKEN) == gateway
            assert holders(processes, PASSWORD) == gateway  # the gateway reads it from its env
            assert "--stage2" in entrypoint(processes)["cmdline"]
            assert files_holding(container, WEBHOOK_TOKEN, LLM_TOKEN) == []
            assert as_agent(container, "ls", SECRETS_FILE)[0] != 0
        finally:
            container.remove(force=True)


def test_a_reporter_run_from_an_execute_only_node_is_out_of_the_agents_reach(
    private_node_image: str, volume: str, bridge: tuple[str, str]
) -> None:
    """The reporter holds the webhook token in its memory, which any process of its uid reads
    (/proc/<pid>/mem) where the kernel has no Yama ptrace restriction. Exec'd from a binary its
    uid cannot read, it is non-dumpable: its /proc files are root's, and the agent's uid can
    open neither its environ nor its memory. With the secrets file, nothing of the agent's uid
    can read the webhook token at all."""
    with serving_model(bridge[1]) as base:
        container = create(private_node_image, volume, bridge, base, file=True)
        try:
            put_secrets_file(container, SECRETS)
            container.start()
            assert_reported(wait_for_heartbeat(container))
            processes = scan(container)
            reporter = entrypoint(processes)
            assert reporter["cmdline"][0] == PRIVATE_NODE and "--stage2" in reporter["cmdline"]
            pid = reporter["pid"]
            for name in ("environ", "mem"):
                code, out = as_agent(container, "bash", "-c", f"exec 3< /proc/{pid}/{name}")
                assert code != 0 and "Permission denied" in out, (name, out)
            # The gateway runs on the ordinary node: the LLM token is where it is by design.
            gateway = gateway_tree(processes)
            assert holders(processes, WEBHOOK_TOKEN) == set()
            assert holders(processes, LLM_TOKEN) == gateway
            assert "read the reporter's webhook token" not in container.logs().decode()
        finally:
            container.remove(force=True)
