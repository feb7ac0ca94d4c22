"""Every rule of the pure planner, one row each: an agent's row and containers in, actions out."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from clawhq.controller.planner import (
    START_GRACE,
    START_RECHECK_SECONDS,
    Action,
    AgentView,
    Do,
    Rules,
    backoff_delay,
    plan,
    up_to_date,
)
from clawhq.controller.probes import Prober, ProbeResult
from clawhq.runtime import Container, ContainerState, PortBinding, labels
from clawhq.status import AgentStatus as S
from clawhq.status import DesiredState as D

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
AGENT = "agent-1"
HASH = "hash-current"
IMAGE_ID = "sha256:current"
PORT = 19400
RECHECK = START_RECHECK_SECONDS


def sec(n: float) -> datetime:
    return NOW + timedelta(seconds=n)


def box(
    cid: str = "c1",
    state: ContainerState = ContainerState.RUNNING,
    *,
    config_hash: str = HASH,
    start: int | None = 1,
    image_id: str = IMAGE_ID,
    port: int | None = PORT,
    agent_id: str = AGENT,
) -> Container:
    return Container(
        id=cid,
        name=f"clawhq-{cid}",
        image="clawhq-openclaw:latest",
        state=state,
        labels={labels.AGENT_ID: agent_id, labels.CONFIG_HASH: config_hash}
        | ({labels.START: str(start)} if start is not None else {}),
        exit_code=None if state is ContainerState.RUNNING else 1,
        ports=(PortBinding("127.0.0.1", port, 18789),) if port else (),
        image_id=image_id,
    )


RUNNING_BOX = box()
EXITED = box(state=ContainerState.EXITED)
CREATED = box(state=ContainerState.CREATED)
STALE_HASH = box(config_hash="hash-old")
STALE_IMAGE = box(image_id="sha256:old")
EXITED_STALE = box(state=ContainerState.EXITED, config_hash="hash-old")
EXITED_OLD_IMAGE = box(state=ContainerState.EXITED, image_id="sha256:old")
EXTRA = box("c2", start=0)


def agent(status: S = S.RUNNING, desired: D = D.RUNNING, **fields: Any) -> AgentView:
    values: dict[str, Any] = {
        "id": AGENT,
        "status": status,
        "desired": desired,
        "generation": 1,
        "handled_generation": 1,
        "recreate_generation": 1,
        "start_generation": 1,
        "container_id": "c1",
        "leased_port": PORT,
        "status_changed_at": sec(-60),
        "intended_hash": HASH,
        "intended_image_id": IMAGE_ID,
    }
    values.update(fields)
    return AgentView(**values)


def asked_start(status: S, **fields: Any) -> AgentView:
    """The owner asked for a start (generation ahead of handled, no recreate)."""
    return agent(status, generation=2, handled_generation=1, recreate_generation=1, **fields)


def asked_deploy(status: S, **fields: Any) -> AgentView:
    return agent(status, generation=2, handled_generation=1, recreate_generation=2, **fields)


def starting(status: S = S.DEPLOYING, **fields: Any) -> AgentView:
    fields.setdefault("start_deadline_at", sec(30))
    if status is S.RESTARTING:
        fields.setdefault("next_restart_at", None)
    return agent(status, **fields)


def lost(status: S = S.DEPLOYING, **fields: Any) -> AgentView:
    """A start under way that no one in this process follows (it was begun elsewhere)."""
    return starting(status, followed=False, **fields)


def healthy(attempt: int = 1) -> ProbeResult:
    return ProbeResult(attempt, True, 0)


def failing(failures: int, attempt: int = 1) -> ProbeResult:
    return ProbeResult(attempt, False, failures)


def A(do: Do, container: Container | None = None, **more: Any) -> Action:
    return Action(do, AGENT, container, **more)


def case(
    name: str,
    view: AgentView | None,
    found: list[Container],
    *expected: Action,
    probe: ProbeResult | None = None,
) -> Any:
    return pytest.param(view, found, probe, list(expected), id=name)


UP, OLD_HASH, OLD_IMAGE = RUNNING_BOX, STALE_HASH, STALE_IMAGE
GONE = "the agent's container disappeared"

# One row per rule: case(id, agent, containers, *expected actions, probe=...).
# fmt: off
CASES = [
    # -- operations: deploy and start -----------------------------------------------------
    case("deploy-running", asked_deploy(S.RUNNING), [UP], A(Do.CREATE, kind="deploy")),
    case("deploy-stopped", asked_deploy(S.STOPPED, container_id=None), [],
         A(Do.CREATE, kind="deploy")),
    case("deploy-from-error", asked_deploy(S.ERROR), [], A(Do.CREATE, kind="deploy")),
    case("start-up-to-date", asked_start(S.STOPPED), [EXITED], A(Do.START, EXITED, kind="start")),
    case("start-image-unknown", asked_start(S.STOPPED, intended_image_id=""), [EXITED_OLD_IMAGE],
         A(Do.START, EXITED_OLD_IMAGE, kind="start")),
    case("start-stale-hash", asked_start(S.STOPPED), [EXITED_STALE], A(Do.CREATE, kind="start")),
    case("start-stale-image", asked_start(S.STOPPED), [EXITED_OLD_IMAGE],
         A(Do.CREATE, kind="start")),
    case("start-no-container", asked_start(S.STOPPED, container_id=None), [],
         A(Do.CREATE, kind="start")),
    case("start-from-error", asked_start(S.ERROR, container_id=None), [],
         A(Do.CREATE, kind="start")),
    case("start-from-error-kept", asked_start(S.ERROR), [EXITED],
         A(Do.START, EXITED, kind="start")),
    case("start-from-error-stale", asked_start(S.ERROR), [EXITED_STALE],
         A(Do.CREATE, kind="start")),
    case("start-while-restarting", asked_start(S.RESTARTING, next_restart_at=sec(100)), [EXITED],
         A(Do.START, EXITED, kind="start")),
    case("start-from-stopping", asked_start(S.STOPPING), [EXITED],
         A(Do.START, EXITED, kind="start")),
    # -- a start under way ------------------------------------------------------------------
    case("starting-healthy", starting(), [UP], A(Do.MARK_RUNNING), probe=healthy()),
    case("restarting-healthy", starting(S.RESTARTING), [UP], A(Do.MARK_RUNNING), probe=healthy()),
    case("healthy-beats-deadline", starting(start_deadline_at=sec(-1)), [UP], A(Do.MARK_RUNNING),
         probe=healthy()),
    case("starting-no-probe-waits", starting(), [UP], A(Do.WAIT, after=RECHECK)),
    case("starting-failing-waits", starting(), [UP], A(Do.WAIT, after=RECHECK), probe=failing(4)),
    case("starting-no-deadline", starting(start_deadline_at=None), [UP], A(Do.WAIT, after=RECHECK)),
    case("starting-waits-until-deadline", starting(start_deadline_at=sec(RECHECK / 2)), [UP],
         A(Do.WAIT, after=RECHECK / 2)),
    case("starting-timeout", starting(start_deadline_at=sec(-1)), [UP],
         A(Do.FAIL_START, UP, timed_out=True)),
    case("starting-timeout-exactly", starting(start_deadline_at=NOW), [UP],
         A(Do.FAIL_START, UP, timed_out=True), probe=failing(2)),
    case("starting-exited", starting(), [EXITED], A(Do.FAIL_START, EXITED)),
    case("starting-created-resumes", starting(), [CREATED], A(Do.START, CREATED, kind="resumed")),
    case("starting-none-followed", starting(container_id=None, status_changed_at=sec(-5)), [],
         A(Do.FAIL_START, reason=GONE)),
    case("starting-recorded-vanished", starting(status_changed_at=sec(-1)), [],
         A(Do.FAIL_START, reason=GONE)),
    # A start this process did not make (its ClawHQ died): a grace, then a crash to restart.
    case("abandoned-none-in-grace", lost(container_id=None, status_changed_at=sec(-5)), [],
         A(Do.WAIT, after=10.0)),
    case("abandoned-none-after-grace",
         lost(container_id=None, status_changed_at=NOW - START_GRACE), [], A(Do.CRASHED)),
    # Within the grace even a vanished or exited container is not judged: it may be that
    # other process's restart, between its stop and its start.
    case("abandoned-recorded-vanished-in-grace", lost(status_changed_at=sec(-1)), [],
         A(Do.WAIT, after=14.0)),
    case("abandoned-recorded-vanished",
         lost(status_changed_at=NOW - START_GRACE), [], A(Do.CRASHED)),
    case("abandoned-exited", lost(), [EXITED], A(Do.CRASHED, EXITED)),
    case("abandoned-exited-in-grace", lost(status_changed_at=sec(-1)), [EXITED],
         A(Do.WAIT, after=14.0)),
    case("abandoned-restart-began-recently",
         lost(S.RESTARTING, status_changed_at=sec(-600),
              start_began_at=sec(-2)), [EXITED], A(Do.WAIT, after=13.0)),
    case("abandoned-created-resumes", lost(), [CREATED], A(Do.START, CREATED, kind="resumed")),
    case("abandoned-healthy", lost(), [UP], A(Do.MARK_RUNNING), probe=healthy()),
    case("abandoned-timeout", lost(start_deadline_at=sec(-1)), [UP],
         A(Do.FAIL_START, UP, timed_out=True)),
    case("adopt-unrecorded", lost(container_id=None, start_generation=3), [box(start=3)],
         A(Do.ADOPT, box(start=3)), A(Do.WAIT, after=RECHECK)),
    case("adopt-then-healthy", lost(container_id=None, start_generation=3), [box(start=3)],
         A(Do.ADOPT, box(start=3)), A(Do.MARK_RUNNING), probe=healthy(3)),
    case("adopt-unlabelled", lost(container_id=None, start_generation=3), [box(start=None)],
         A(Do.ADOPT, box(start=None)), A(Do.WAIT, after=RECHECK)),
    case("adopt-own-start", starting(container_id=None, start_generation=3), [box(start=3)],
         A(Do.ADOPT, box(start=3)), A(Do.WAIT, after=RECHECK)),
    case("no-adopt-other-start",
         lost(container_id=None, start_generation=3, status_changed_at=sec(-5)),
         [box(start=2)], A(Do.REMOVE, box(start=2)), A(Do.WAIT, after=10.0)),
    case("no-adopt-two-candidates", lost(container_id=None, status_changed_at=sec(-5)),
         [box("c1"), box("c2")], A(Do.REMOVE, box("c1")), A(Do.REMOVE, box("c2")),
         A(Do.WAIT, after=10.0)),
    case("no-adopt-when-not-starting", agent(S.RUNNING, container_id=None), [box(start=1)],
         A(Do.REMOVE, box(start=1)), A(Do.CRASHED)),
    # -- running: crashes, probes, backoff --------------------------------------------------
    case("extras-removed", agent(), [UP, EXTRA], A(Do.REMOVE, EXTRA)),
    case("running-exited-crashed", agent(), [EXITED], A(Do.CRASHED, EXITED)),
    case("running-vanished-crashed", agent(), [], A(Do.CRASHED)),
    case("running-no-probe", agent(), [UP]),
    case("probe-healthy", agent(), [UP], A(Do.HEALTHY), probe=healthy()),
    case("probe-below-threshold", agent(), [UP], probe=failing(2)),
    case("probe-at-threshold", agent(), [UP], A(Do.UNHEALTHY, failures=3), probe=failing(3)),
    case("probe-above-threshold", agent(), [UP], A(Do.UNHEALTHY, failures=7), probe=failing(7)),
    case("unhealthy-recovers", agent(S.UNHEALTHY), [UP], A(Do.RECOVERED), probe=healthy()),
    case("unhealthy-restart-due", agent(S.UNHEALTHY, next_restart_at=NOW), [UP],
         A(Do.RESTART, UP, kind="restart"), probe=failing(5)),
    case("unhealthy-waits", agent(S.UNHEALTHY, next_restart_at=sec(12.5)), [UP],
         A(Do.WAIT, after=12.5), probe=failing(4)),
    case("unhealthy-no-restart-time", agent(S.UNHEALTHY), [UP], probe=failing(4)),
    case("unhealthy-crashed", agent(S.UNHEALTHY), [EXITED], A(Do.CRASHED, EXITED)),
    case("restarting-backoff-waits", agent(S.RESTARTING, next_restart_at=sec(7)), [EXITED],
         A(Do.WAIT, after=7.0)),
    case("restarting-due", agent(S.RESTARTING, next_restart_at=sec(-0.5)), [EXITED],
         A(Do.RESTART, EXITED, kind="restart")),
    case("restarting-due-vanished", agent(S.RESTARTING, next_restart_at=NOW), [],
         A(Do.CREATE, kind="restart")),
    # -- drift alone never recreates --------------------------------------------------------
    case("drift-running-hash", agent(), [OLD_HASH]),
    case("drift-running-image", agent(), [OLD_IMAGE], A(Do.HEALTHY), probe=healthy()),
    case("drift-unhealthy", agent(S.UNHEALTHY, next_restart_at=sec(5)), [OLD_HASH],
         A(Do.WAIT, after=5.0)),
    # -- stop -------------------------------------------------------------------------------
    case("stop-asked-running", agent(S.RUNNING, D.STOPPED, generation=2), [UP], A(Do.STOP, UP)),
    case("stop-stopping-running", agent(S.STOPPING, D.STOPPED), [UP], A(Do.STOP, UP)),
    case("stop-exited-marks", agent(S.STOPPING, D.STOPPED), [EXITED], A(Do.MARK_STOPPED, EXITED)),
    case("stop-deploying-exited", agent(S.DEPLOYING, D.STOPPED), [EXITED],
         A(Do.MARK_STOPPED, EXITED)),
    case("stopped-settled", agent(S.STOPPED, D.STOPPED), [EXITED]),
    case("stop-no-container-releases", agent(S.STOPPING, D.STOPPED, container_id=None), [],
         A(Do.MARK_STOPPED), A(Do.RELEASE_LEASE)),
    case("desired-running-but-stopped", agent(S.STOPPED), [EXITED]),
    # -- errors, deletes, strays ------------------------------------------------------------
    case("error-leftover-running", agent(S.ERROR), [EXITED], A(Do.REMOVE, EXITED)),
    case("error-leftover-stopped", agent(S.ERROR, D.STOPPED), [EXITED], A(Do.REMOVE, EXITED)),
    case("error-unrecorded-leftover", agent(S.ERROR, container_id=None), [EXITED],
         A(Do.REMOVE, EXITED), A(Do.RELEASE_LEASE)),
    case("error-clean-releases", agent(S.ERROR, container_id=None), [], A(Do.RELEASE_LEASE)),
    case("error-in-rollout-keeps-port", agent(S.ERROR, container_id=None, in_rollout=True), []),
    case("error-stop-asked", agent(S.ERROR, D.STOPPED, generation=2, container_id=None), [],
         A(Do.MARK_STOPPED)),
    case("deleted", agent(S.RUNNING, D.DELETED), [UP, EXTRA], A(Do.FINISH_DELETE)),
    case("deleted-nothing-left", agent(S.STOPPED, D.DELETED, container_id=None), [],
         A(Do.FINISH_DELETE)),
    case("strays", None, [box("s1", agent_id="gone-1"), box("s2", agent_id="gone-2")],
         Action(Do.REMOVE, "gone-1", box("s1", agent_id="gone-1")),
         Action(Do.REMOVE, "gone-2", box("s2", agent_id="gone-2"))),
    case("strays-none", None, []),
    # -- leases -----------------------------------------------------------------------------
    case("repair-lease", agent(leased_port=None), [UP], A(Do.REPAIR_LEASE, UP, port=PORT)),
    case("no-repair-without-port", agent(leased_port=None), [box(port=None)]),
    case("release-stopped", agent(S.STOPPED, D.STOPPED, container_id=None), [],
         A(Do.RELEASE_LEASE)),
    case("no-release-op-pending", agent(S.STOPPED, D.STOPPED, container_id=None, generation=2), []),
    case("no-release-starting", lost(container_id=None, status_changed_at=sec(-1)), [],
         A(Do.WAIT, after=14.0)),
    case("no-release-no-lease",
         agent(S.STOPPED, D.STOPPED, container_id=None, leased_port=None), []),
    case("no-release-restarting", agent(S.RESTARTING, container_id=None, next_restart_at=sec(3)),
         [], A(Do.WAIT, after=3.0)),
]
# fmt: on


@pytest.mark.parametrize(("view", "found", "probe", "expected"), CASES)
def test_plan(
    view: AgentView | None,
    found: list[Container],
    probe: ProbeResult | None,
    expected: list[Action],
) -> None:
    assert plan(view, found, probe, NOW) == expected


def test_case_ids_are_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(
    ("threshold", "failures", "expected"),
    [(5, 4, []), (5, 5, [A(Do.UNHEALTHY, failures=5)]), (1, 1, [A(Do.UNHEALTHY, failures=1)])],
    ids=["below-custom", "at-custom", "threshold-one"],
)
def test_failure_threshold_comes_from_rules(
    threshold: int, failures: int, expected: list[Action]
) -> None:
    rules = Rules(failure_threshold=threshold)
    assert plan(agent(), [RUNNING_BOX], failing(failures), NOW, rules) == expected


@pytest.mark.parametrize(
    ("container", "view", "expected"),
    [
        (RUNNING_BOX, agent(), True),
        (STALE_HASH, agent(), False),
        (STALE_IMAGE, agent(), False),
        (STALE_IMAGE, agent(intended_image_id=""), True),
        (box(image_id=""), agent(), True),
        (box(config_hash=""), agent(), False),
    ],
    ids=["same", "hash", "image", "image-unknown", "container-image-unknown", "no-label"],
)
def test_up_to_date(container: Container, view: AgentView, expected: bool) -> None:
    assert up_to_date(view, container) is expected


def test_a_probe_of_an_older_start_is_not_handed_to_the_planner() -> None:
    """The caller asks the prober for the current start's result: an older one is None."""
    settings = SimpleNamespace(startup_poll_interval=0.1, health_interval=30.0)
    prober = Prober(
        settings,
        lambda url: True,
        clock=None,
        on_result=lambda key: None,
        locate=lambda a, c: "http://127.0.0.1:1/healthz",
    )  # type: ignore[arg-type]
    prober.queue = SimpleNamespace(add=lambda key, delay=0.0: None)  # type: ignore[assignment]
    prober.track(AGENT, "c1", 1, startup=True)
    prober.run(AGENT)
    assert prober.result(AGENT, 1) == healthy(1)
    assert prober.result(AGENT, 2) is None
    # So a healthy answer of start 1 never marks start 2 running: plan gets None and waits.
    view = starting(start_generation=2)
    assert plan(view, [box(start=2)], prober.result(AGENT, 2), NOW) == [A(Do.WAIT, after=RECHECK)]
    # Re-targeted at start 2, the old result is dropped.
    prober.track(AGENT, "c1", 2, startup=True)
    assert prober.result(AGENT, 1) is None


def test_plan_is_pure() -> None:
    view = asked_deploy(S.RUNNING)
    before = replace(view)
    found = [RUNNING_BOX, EXTRA]
    assert plan(view, found, healthy(), NOW) == plan(view, found, healthy(), NOW)
    assert view == before
    assert found == [RUNNING_BOX, EXTRA]


@pytest.mark.parametrize(
    ("step", "expected"),
    [(0, 0.0), (-1, 0.0), (1, 10.0), (2, 20.0), (3, 40.0), (5, 160.0), (6, 300.0), (60, 300.0)],
    ids=["zero", "negative", "first", "doubles", "doubles-again", "below-cap", "capped", "far"],
)
def test_backoff_delay(step: int, expected: float) -> None:
    assert backoff_delay(step, 10.0, 300.0) == expected


def test_backoff_delay_is_a_float_even_for_int_arguments() -> None:
    assert isinstance(backoff_delay(2, 1, 5), float)
    assert backoff_delay(4, 1, 5) == 5.0


def test_a_long_stopped_agent_gives_its_port_back_and_keeps_its_workspace() -> None:
    """Issue 13, item 7: stopped agents no longer hold the shared port pool for ever."""
    rules = Rules(lease_release_after=timedelta(hours=24))
    stopped = agent(S.STOPPED, D.STOPPED, status_changed_at=sec(-25 * 3600), leased_port=PORT)
    assert plan(stopped, [EXITED], None, NOW, rules) == [
        Action(Do.REMOVE, AGENT, EXITED),  # the container, not the workspace volume
        Action(Do.RELEASE_LEASE, AGENT),
    ]
    recent = agent(S.STOPPED, D.STOPPED, status_changed_at=sec(-3600), leased_port=PORT)
    assert plan(recent, [EXITED], None, NOW, rules) == [Action(Do.WAIT, AGENT, after=23 * 3600.0)]
    assert plan(stopped, [EXITED], None, NOW, Rules()) == []  # off: kept for ever
    asked = agent(
        S.STOPPED, D.RUNNING, generation=2, status_changed_at=sec(-25 * 3600), leased_port=PORT
    )
    assert plan(asked, [EXITED], None, NOW, rules)[0].do is Do.START  # a start asked: no release
