"""Two agents cannot reach each other, while each still serves on its own port."""

from __future__ import annotations

from tests.integration.helpers import deploy_running, exec_in, sdk

BB = "/bin/busybox"


def fetch(container_id: str, url: str) -> tuple[int, str]:
    # busybox wget's -T crashes in Debian's static build; `timeout` bounds it instead.
    return exec_in(container_id, BB, "timeout", "3", BB, "wget", "-q", "-O", "-", url)


def test_agents_cannot_reach_each_other(docker_app) -> None:
    with docker_app() as api:
        alice, bob = api.user(), api.user()
        a = deploy_running(api, alice, api.agent(alice)["id"])
        b = deploy_running(api, bob, api.agent(bob)["id"])

        b_info = sdk().api.inspect_container(b["containerId"])
        b_ip = b_info["NetworkSettings"]["Networks"]["clawhq-test-agents"]["IPAddress"]
        gateway = b_info["NetworkSettings"]["Networks"]["clawhq-test-agents"]["Gateway"]

        # B answers itself on its container address: the service is up and the URL right.
        code, out = fetch(b["containerId"], f"http://{b_ip}:18789/healthz")
        assert code == 0 and '"ok":true' in out
        # A cannot open B's container address, nor B's published port through the host.
        code, _ = fetch(a["containerId"], f"http://{b_ip}:18789/healthz")
        assert code != 0
        code, _ = fetch(a["containerId"], f"http://{gateway}:{b['containerPort']}/healthz")
        assert code != 0
