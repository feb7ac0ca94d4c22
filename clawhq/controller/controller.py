"""The controller: the one place where agents change, fed by one work queue.

Operations, engine events, probe results, timers (backoffs, start deadlines) and periodic
full reconciles all queue agent ids; duplicates coalesce and one worker at a time syncs an
agent (:class:`~clawhq.controller.sync.AgentSync`), so a burst — dockerd restarting under
200 agents, say — is worked through by a bounded pool, and no worker ever sleeps while it
holds an agent: waits are timers on the queue. Rollouts are keys on the same queue.

In production :meth:`start` runs the workers and :mod:`.sources` on threads. Tests drive it
by hand: :meth:`run_pending` works through everything due, with a manual clock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from clawhq.controller.keys import AgentKey, Key, RolloutKey
from clawhq.controller.planner import Action
from clawhq.controller.probes import Prober
from clawhq.controller.queue import WorkQueue
from clawhq.controller.sync import AgentSync, Outcome
from clawhq.errors import ClawHQError, DatabaseUnavailable
from clawhq.observability import logs

log = logging.getLogger(__name__)

MAX_ERROR_BACKOFF = 30.0
#: One step of a rollout: seconds until its next look, or None when it is done.
RolloutSync = Callable[[str], float | None]


class Completions:
    """Operations waiting for the controller to act on their generation of an agent."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, list[tuple[int, Future[None]]]] = {}

    def expect(self, agent_id: str, generation: int) -> Future[None]:
        future: Future[None] = Future()
        with self._lock:
            self._waiting.setdefault(agent_id, []).append((generation, future))
        return future

    def resolve(
        self, agent_id: str, handled: int | None, error: ClawHQError | None, *, all_: bool = False
    ) -> None:
        with self._lock:
            waiting = self._waiting.get(agent_id, [])
            done = [(g, f) for g, f in waiting if all_ or (handled is not None and g <= handled)]
            rest = [(g, f) for g, f in waiting if (g, f) not in done]
            if rest:
                self._waiting[agent_id] = rest
            else:
                self._waiting.pop(agent_id, None)
        for _, future in done:
            if future.done():
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(None)


class Controller:
    """Works the queue: ``queue``, ``prober``, ``agents`` and ``rollouts`` are made by the
    composition root (:func:`clawhq.context.build_context`), which wires them to each other."""

    def __init__(
        self,
        queue: WorkQueue[Key],
        prober: Prober,
        agents: AgentSync,
        rollouts: RolloutSync,
        *,
        workers: int = 8,
    ) -> None:
        self.queue = queue
        self.prober = prober
        self.agents = agents
        self.rollouts = rollouts
        self.completions = Completions()
        self._workers = workers
        self._errors: dict[Key, float] = {}
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    # -- feeding the queue ----------------------------------------------------------------

    def enqueue(self, agent_id: str, delay: float = 0.0) -> None:
        self.queue.add(AgentKey(agent_id), delay)

    def enqueue_rollout(self, rollout_id: str, delay: float = 0.0) -> None:
        self.queue.add(RolloutKey(rollout_id), delay)

    # -- working ----------------------------------------------------------------------------

    def process(self, key: Key) -> None:
        """Sync one key (an agent or a rollout) and schedule what follows."""
        try:
            if isinstance(key, RolloutKey):
                again = self.rollouts(key.rollout_id)
                if again is not None:
                    self.queue.add(key, again)
                self._errors.pop(key, None)
                return
            with logs.bound(agent_id=key.agent_id):
                outcome = self.agents.sync(key.agent_id)
            self._after(key, outcome)
        except (ClawHQError, SQLAlchemyError) as exc:
            error = (
                exc
                if isinstance(exc, ClawHQError)
                else DatabaseUnavailable("the database is unavailable; try again shortly")
            )
            if isinstance(key, AgentKey):
                self.completions.resolve(key.agent_id, None, error, all_=True)
            self._retry(key, f"sync of {describe(key)} failed: {error.message}")
        except Exception:  # one bad sync never stops the controller
            log.exception("sync of %s failed", describe(key))
            self._retry(key, None)

    def _after(self, key: AgentKey, outcome: Outcome) -> None:
        agent_id = key.agent_id
        self.completions.resolve(agent_id, outcome.handled, outcome.error, all_=outcome.deleted)
        if outcome.error is not None:
            self._retry(key, f"agent {agent_id}: {outcome.error.message}")
            return
        self._errors.pop(key, None)
        if outcome.again_in is not None:
            self.queue.add(key, outcome.again_in)
        if outcome.rollout_id is not None:
            self.enqueue_rollout(outcome.rollout_id)

    def _retry(self, key: Key, message: str | None) -> None:
        delay = min(self._errors.get(key, 0.25) * 2, MAX_ERROR_BACKOFF)
        self._errors[key] = delay
        if message:
            log.warning("%s; again in %.1fs", message, delay)
        self.queue.add(key, delay)

    def remove_stray(self, action: Action) -> None:
        """Remove a container no agent row holds (found by a full resync)."""
        try:
            self.agents.steps.remove_stray(action)
        except ClawHQError as exc:
            log.warning("could not remove stray container: %s", exc.message)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until nothing is queued or being worked on (tests and tools)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.queue.busy():
                return True
            time.sleep(0.02)
        return False

    def run_pending(self, limit: int = 10_000) -> int:
        """Work through every key and probe that is due, on this thread (tests)."""
        done = 0
        while done < limit:
            probe_key = self.prober.queue.get_nowait()
            if probe_key is not None:
                try:
                    self.prober.run(probe_key)
                finally:
                    self.prober.queue.done(probe_key)
                done += 1
                continue
            key = self.queue.get_nowait()
            if key is None:
                return done
            try:
                self.process(key)
            finally:
                self.queue.done(key)
            done += 1
        return done

    # -- threads --------------------------------------------------------------------------

    def start(self) -> None:
        for n in range(self._workers):
            self._spawn(f"clawhq-sync-{n}", self._work, self.queue, self.process)
        for n in range(self._workers):
            self._spawn(f"clawhq-probe-{n}", self._work, self.prober.queue, self.prober.run)

    def _spawn(self, name: str, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _work(self, queue: WorkQueue[Any], handle: Callable[[Any], None]) -> None:
        while not self._stop.is_set():
            key = queue.get(timeout=1.0)
            if key is None:
                continue
            try:
                handle(key)
            except Exception:
                log.exception("worker failed on %s", key)
            finally:
                queue.done(key)

    @property
    def threads(self) -> list[threading.Thread]:
        return list(self._threads)

    def stop(self) -> None:
        self._stop.set()
        self.queue.close()
        self.prober.queue.close()
        for thread in self._threads:
            thread.join(timeout=5)


def describe(key: Key) -> str:
    """The key as log lines name it."""
    return key.agent_id if isinstance(key, AgentKey) else f"rollout:{key.rollout_id}"
