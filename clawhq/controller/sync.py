"""One sync of one agent: observe, plan under the row's lock, carry the plan out.

1. Read the agent's row, and list its containers from the engine (the cache is updated).
2. Lock the row; if it changed since step 1, start over (another process acted). Plan with
   :func:`~clawhq.controller.planner.plan`, record that the latest operation is handled,
   and apply each action's first transition (``DEPLOYING``, ``STOPPING``…) in the same
   transaction: that transition is also the claim, so another ClawHQ process sharing the
   database that plans the same agent next sees it and does not act twice.
3. Outside any transaction, do the engine work of the actions (:mod:`.steps`); each step
   writes its outcome in a short transaction of its own, checking that its start is still
   the agent's latest (``start_generation``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from clawhq.controller import transitions
from clawhq.controller.deps import ControllerDeps
from clawhq.controller.observed import observe_agent
from clawhq.controller.planner import Action, AgentView, Do, is_starting, plan
from clawhq.controller.probes import Prober
from clawhq.controller.specs import plan_terms
from clawhq.controller.steps import Steps
from clawhq.db.models import Agent, PortLease
from clawhq.errors import ClawHQError
from clawhq.status import AgentStatus, DesiredState

log = logging.getLogger(__name__)

S = AgentStatus
MAX_RETRIES = 3
#: Actions that change nothing worth counting (a passing probe, a wait).
QUIET = frozenset({Do.WAIT, Do.HEALTHY})


@dataclass(frozen=True)
class Outcome:
    """What one sync did: the generation it handled, the error of its work, when to look
    again (None: only when something happens)."""

    handled: int | None = None
    error: ClawHQError | None = None
    again_in: float | None = None
    deleted: bool = False
    #: The rollout this agent is part of: it is told after every sync of the agent.
    rollout_id: str | None = None


def lock(session: Session, agent_id: str) -> Agent | None:
    return session.scalars(
        select(Agent).where(Agent.id == agent_id).with_for_update()
    ).one_or_none()


class AgentSync:
    def __init__(self, deps: ControllerDeps, prober: Prober) -> None:
        self.deps = deps
        self.prober = prober
        self.steps = Steps(deps, prober)
        #: Actions taken so far (not counting waits and passing probes): tests watch it.
        self.acted = 0

    def view(self, session: Session, agent: Agent) -> AgentView:
        lease = session.scalar(select(PortLease.port).where(PortLease.agent_id == agent.id))
        terms = plan_terms(session, agent.user_id)
        image = self.deps.specs.image_of(agent, session, terms)
        return AgentView(
            id=agent.id,
            status=agent.status,
            desired=agent.desired_state,
            generation=agent.generation,
            handled_generation=agent.handled_generation,
            recreate_generation=agent.recreate_generation,
            start_generation=agent.start_generation,
            container_id=agent.container_id,
            leased_port=lease,
            next_restart_at=agent.next_restart_at,
            start_deadline_at=agent.start_deadline_at,
            status_changed_at=agent.status_changed_at,
            in_rollout=agent.rollout_id is not None,
            intended_hash=self.deps.specs.intended_hash(
                agent, agent.container_port, image, terms.egress
            ),
            intended_image_id=self.deps.observed.image_id(image),
            followed=self.steps.follows(agent.id, agent.start_generation),
            has_llm_token=agent.llm_token_hash is not None,
            start_began_at=(
                agent.start_deadline_at - timedelta(seconds=self.deps.settings.start_timeout)
                if agent.start_deadline_at is not None
                else None
            ),
        )

    def _snapshot(self, agent_id: str) -> AgentView | None:
        with self.deps.read_sessions() as session:
            agent = session.get(Agent, agent_id)
            return self.view(session, agent) if agent is not None else None

    def sync(self, agent_id: str) -> Outcome:
        parts = self.deps
        if not parts.host.prepared:
            parts.networks.prepare()  # the engine was away at start: the network may be missing
        noted = parts.observed.take_noted(agent_id)  # inspected at every look of this sync
        for _ in range(MAX_RETRIES):
            snapshot = self._snapshot(agent_id)
            found = observe_agent(parts.runtime, parts.observed, agent_id, noted)
            parts.observed.replace_agent(agent_id, found)
            with parts.sessions.begin() as session:
                agent = lock(session, agent_id)
                current = self.view(session, agent) if agent is not None else None
                if current != snapshot:
                    continue  # changed between the read and the lock: look again
                probe = None
                if agent is not None:
                    probe = self.prober.result(agent_id, agent.start_generation)
                actions = plan(current, found, probe, parts.clock.now(), parts.rules)
                handled = None
                rollout_id = agent.rollout_id if agent is not None else None
                if agent is not None and current is not None and current.op_pending:
                    transitions.acknowledge(agent)
                    handled = agent.generation
                works = [self.steps.prepare(session, agent, a) for a in actions]
            acted = [a for a in actions if a.do not in QUIET]
            if acted:
                self.acted += len(acted)
                log.debug("agent %s: %s", agent_id, ", ".join(a.do for a in acted))
            outcome = self._carry_out(agent_id, actions, works, handled)
            return replace(outcome, rollout_id=rollout_id)
        return Outcome(again_in=0.0)

    def _carry_out(
        self,
        agent_id: str,
        actions: list[Action],
        works: list[Callable[[], None] | None],
        handled: int | None,
    ) -> Outcome:
        error: ClawHQError | None = None
        worked = False
        for work in works:
            if work is None:
                continue
            worked = True
            try:
                work()
            except ClawHQError as exc:
                error = exc
                break
        waits = [a.after for a in actions if a.do is Do.WAIT and a.after is not None]
        # After a change, look again at once: the next plan says what follows (a wait until a
        # restart is due, say) from the row as it now is.
        changed = worked or any(a.do not in QUIET for a in actions)
        again = 0.0 if changed else (min(waits) if waits else None)
        deleted = any(a.do is Do.FINISH_DELETE for a in actions) and error is None
        if not deleted:
            self._track(agent_id)
        return Outcome(handled, error, again, deleted)

    def _track(self, agent_id: str) -> None:
        """Point the prober at the agent's current start, or stop probing it."""
        p, prober = self.deps, self.prober
        with p.read_sessions() as session:
            row = session.execute(
                select(
                    Agent.status,
                    Agent.desired_state,
                    Agent.start_generation,
                    Agent.container_id,
                    Agent.next_restart_at,
                ).where(Agent.id == agent_id)
            ).one_or_none()
        if row is None or row.desired_state is not DesiredState.RUNNING or not row.container_id:
            prober.untrack(agent_id)
            return
        if is_starting(row.status, row.next_restart_at):
            prober.track(agent_id, row.container_id, row.start_generation, startup=True)
        elif row.status in (S.RUNNING, S.UNHEALTHY) and p.supervise:
            prober.track(agent_id, row.container_id, row.start_generation, startup=False)
        else:
            prober.untrack(agent_id)
