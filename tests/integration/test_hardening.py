"""A deployed agent's container, as the engine reports it, has every limit and hardening option."""

from __future__ import annotations

import httpx

from clawhq.controller.spec import SECRET_ENV
from tests.integration.helpers import deploy_running, sdk


def test_container_is_hardened_and_limited(docker_app) -> None:
    with docker_app(agent_memory="96m", agent_pids_limit=64, agent_cpu_quota=25_000) as api:
        me = api.user()
        agent = api.agent(me)
        body = deploy_running(api, me, agent["id"])
        info = sdk().api.inspect_container(body["containerId"])

    host, config = info["HostConfig"], info["Config"]
    assert info["Name"] == f"/clawhq-{me['X-User-Id']}-{agent['id']}"
    assert config["User"] == "1001:1001"
    assert config["Labels"]["clawhq.service"] == "openclaw-agent"
    assert config["Labels"]["clawhq.user-id"] == me["X-User-Id"]
    assert config["Labels"]["clawhq.agent-id"] == agent["id"]
    assert len(config["Labels"]["clawhq.config-hash"]) == 16
    env = dict(item.split("=", 1) for item in config["Env"])
    for name in (
        "CLAWHQ_USER_ID",
        "CLAWHQ_AGENT_ID",
        "CLAWHQ_AGENT_NAME",
        "CLAWHQ_MODEL_PROVIDER",
        "CLAWHQ_MODEL",
        "CLAWHQ_CHANNELS",
        "CLAWHQ_WEBHOOK_URL",
        "CLAWHQ_SECRETS_FILE",
        "CLAWHQ_PROXY_ADDRESSES",
        "CLAWHQ_PUBLIC_ORIGIN",
        "CLAWHQ_BASE_PATH",
        "CLAWHQ_LLM_BASE_URL",
    ):
        assert env.get(name), name
    # No secret in the env (they come in the file ClawHQ writes before each start), and the
    # provider key stays with ClawHQ: the agent holds a token for ClawHQ's LLM gateway.
    assert not SECRET_ENV & set(env)
    assert not [v for v in env.values() if "chqllm_" in v or "whk_" in v]
    assert "sk-test-0123456789" not in str(env)
    assert host["RestartPolicy"]["Name"] == "no"  # every start is ClawHQ's, with its file

    assert host["Memory"] == 96 * 1024**2
    assert host["MemorySwap"] == host["Memory"]  # no swap beyond the limit
    assert (host["CpuQuota"], host["CpuPeriod"]) == (25_000, 100_000)
    assert host["PidsLimit"] == 64
    assert host["ReadonlyRootfs"] is True
    assert "/tmp" in host["Tmpfs"]
    assert host["CapDrop"] == ["ALL"]
    assert not host.get("CapAdd")
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["Privileged"] is False
    assert host["Init"] is True
    assert host["LogConfig"] == {
        "Type": "json-file",
        "Config": {"max-file": "3", "max-size": "10m"},
    }
    assert host["NetworkMode"] == "clawhq-test-agents"
    assert list(info["NetworkSettings"]["Networks"]) == ["clawhq-test-agents"]
    bindings = host["PortBindings"]["18789/tcp"]
    assert bindings == [{"HostIp": "127.0.0.1", "HostPort": str(body["containerPort"])}]
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    assert mounts["/home/openclaw"]["Type"] == "volume"
    assert mounts["/home/openclaw"]["Name"] == f"clawhq-workspace-{agent['id']}"
    assert host["PidMode"] == "" and host["IpcMode"] in ("private", "shareable", "")
    assert not any(b for b in host.get("Binds") or [] if "docker.sock" in b)


def test_agent_network_blocks_inter_container_traffic(docker_app) -> None:
    with docker_app():
        network = sdk().networks.get("clawhq-test-agents")
    assert network.attrs["Options"]["com.docker.network.bridge.enable_icc"] == "false"
    assert network.attrs["Driver"] == "bridge"


def test_health_answers_on_loopback_only(docker_app) -> None:
    with docker_app() as api:
        me = api.user()
        body = deploy_running(api, me, api.agent(me)["id"])
        reply = httpx.get(f"http://127.0.0.1:{body['containerPort']}/healthz", timeout=5)
        assert reply.json()["ok"] is True
