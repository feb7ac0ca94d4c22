"""`clawhq doctor --security` against the real engine: ClawHQ's own agents pass; a container
weakened on purpose, carrying ClawHQ's labels, fails on exactly what was weakened."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clawhq.runtime import labels
from tests.integration.helpers import deploy_running, sdk
from tests.integration.served import cli, free_port, serve_env

NETWORK = "clawhq-sec-test"
PORT_RANGE = "19900-19999"
WEBHOOK = "http://127.0.0.1:9"  # what docker_app's settings use

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the firewall part needs root")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, docker_runtime: Any) -> Iterator[dict[str, str]]:
    """The CLI's environment for this module's network, with the firewall rules installed."""
    tmp = tmp_path_factory.mktemp("doctor")
    values = serve_env(
        tmp / "data",
        f"sqlite:///{tmp / 'clawhq.db'}",
        agent_network=NETWORK,
        port_range=PORT_RANGE,
        webhook_base_url=WEBHOOK,
    )
    values["CLAWHQ_PORT"] = str(free_port())
    setup = cli(values, "network", "setup")
    assert setup.returncode == 0, setup.stdout + setup.stderr
    yield values
    teardown = cli(values, "network", "teardown")
    assert teardown.returncode == 0, teardown.stderr
    network = sdk().networks.get(NETWORK)
    network.reload()
    if not network.attrs.get("Containers"):
        network.remove()


def sections(report: str) -> dict[str, list[str]]:
    """The report's sections: heading -> its finding lines."""
    found: dict[str, list[str]] = {}
    current = ""
    for line in report.splitlines():
        if line.startswith("  ["):
            found.setdefault(current, []).append(line.strip())
        else:
            current = line
    return found


def section_of(report: str, container_id: str) -> list[str]:
    return next(v for k, v in sections(report).items() if f"({container_id[:12]}," in k)


def failures(lines: list[str]) -> set[str]:
    return {m.group(1) for line in lines if (m := re.match(r"\[FAIL\] (CIS \S+|ClawHQ)", line))}


def test_doctor_passes_on_clawhqs_own_agents(docker_app, env: dict[str, str]) -> None:
    # No supervisor: on a shared engine it would remove other ClawHQ instances' agents.
    with docker_app(
        agent_network=NETWORK, port_range=PORT_RANGE, webhook_base_url=WEBHOOK, supervise=False
    ) as api:
        me = api.user()
        agent = deploy_running(api, me, api.agent(me)["id"])
        report = cli(env, "doctor", "--security")
    output = report.stdout + report.stderr
    mine = section_of(report.stdout, agent["containerId"])
    assert failures(mine) == set(), output
    assert any(line.startswith("[exc ] CIS 5.14") for line in mine)  # restart: the supervisor's
    assert any(line.startswith("[exc ] CIS 5.26") for line in mine)  # health: the supervisor's
    assert any(line.startswith("[ok  ] CIS 5.3 ") for line in mine)
    all_sections = sections(report.stdout)
    assert failures(all_sections[f"agent network {NETWORK}"]) == set(), output
    assert failures(all_sections[f"host firewall for {NETWORK}"]) == set(), output
    assert any("live-restore" in line for line in all_sections["Docker daemon"])
    # Other people's agents on this shared engine are ClawHQ's too; all of them pass.
    assert report.returncode == 0, output


@pytest.fixture
def weakened(test_image: str, tmp_path: Path) -> Iterator[Any]:
    """A container with ClawHQ's labels and every hardening undone. Created, never started."""
    agent_id = f"weak{uuid.uuid4().hex[:12]}"
    container = sdk().containers.create(
        test_image,
        name=f"clawhq-sec-weak-{agent_id}",
        labels={
            labels.SERVICE: labels.SERVICE_AGENT,
            labels.USER_ID: "sec-test-weak",
            labels.AGENT_ID: agent_id,
        },
        user="0",
        privileged=True,
        read_only=False,
        network_mode="bridge",
        ports={"18789/tcp": ("0.0.0.0", 19999)},
        volumes={
            "/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "ro"},
            "/etc": {"bind": "/host-etc", "mode": "ro"},
        },
        restart_policy={"Name": "always"},
    )
    yield container
    container.remove(force=True)


def test_doctor_fails_on_a_weakened_container(weakened: Any, env: dict[str, str]) -> None:
    report = cli(env, "doctor", "--security")
    assert report.returncode == 1, report.stdout
    lines = section_of(report.stdout, weakened.id)
    assert failures(lines) == {
        "CIS 4.1",  # runs as root
        "CIS 5.3",  # CapDrop lacks ALL
        "CIS 5.4",  # privileged
        "CIS 5.5",  # /etc mounted
        "CIS 5.10",  # no memory limit
        "CIS 5.11",  # no CPU limit
        "CIS 5.12",  # writable root filesystem
        "CIS 5.13",  # published on 0.0.0.0
        "CIS 5.14",  # restart always
        "CIS 5.25",  # no no-new-privileges
        "CIS 5.28",  # no pids limit
        "CIS 5.29",  # Docker's default bridge
        "CIS 5.31",  # docker.sock mounted
        "ClawHQ",  # on a network where containers talk to each other
    }, "\n".join(lines)
    text = "\n".join(lines)
    assert "privileged" in text and "docker.sock" in text and "0.0.0.0:19999" in text
    assert f"section(s) failed: container clawhq-sec-weak-{weakened.labels[labels.AGENT_ID]}" in (
        report.stdout
    )


def test_doctor_fails_without_the_firewall_rules(env: dict[str, str]) -> None:
    assert cli(env, "network", "teardown").returncode == 0
    try:
        report = cli(env, "doctor", "--security")
        assert report.returncode == 1
        firewall = sections(report.stdout)[f"host firewall for {NETWORK}"]
        assert failures(firewall) == {"ClawHQ"}
        assert "clawhq network setup" in firewall[0]
    finally:
        assert cli(env, "network", "setup").returncode == 0
