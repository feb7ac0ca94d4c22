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

from sqlalchemy.exc import SQLAlchemyError

from clawhq.controller.health import Probe
from clawhq.controller.parts import Parts
from clawhq.controller.planner import Action
from clawhq.controller.probes import Prober
from clawhq.controller.queue import WorkQueue
from clawhq.controller.sync import AgentSync, Outcome
from clawhq.errors import ClawHQError, DatabaseUnavailable
from clawhq.observability import logs

log = logging.getLogger(__name__)

ROLLOUT = "rollout:"
MAX_ERROR_BACKOFF = 30.0


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
    def __init__(self, parts: Parts, probe: Probe, *, workers: int = 8) -> None:
        self.parts = parts
        self.queue: WorkQueue[str] = WorkQueue(parts.clock)
        self.prober = Prober(
            parts.settings, probe, parts.clock, self.enqueue, parts.health_url, parts.metrics
        )
        parts.prober = self.prober
        self.agents = AgentSync(parts)
        self.completions = Completions()
        self.rollout_sync: Callable[[str], float | None] | None = None
        self._workers = workers
        self._errors: dict[str, float] = {}
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    def prepare(self) -> str:
        """Make sure the agent network exists; return its gateway address on the host."""
        return self.parts.prepare()

    # -- feeding the queue ----------------------------------------------------------------

    def enqueue(self, agent_id: str, delay: float = 0.0) -> None:
        self.queue.add(agent_id, delay)

    def enqueue_rollout(self, rollout_id: str, delay: float = 0.0) -> None:
        self.queue.add(ROLLOUT + rollout_id, delay)

    # -- working ----------------------------------------------------------------------------

    def process(self, key: str) -> None:
        """Sync one key (an agent id or a rollout) and schedule what follows."""
        try:
            if key.startswith(ROLLOUT):
                again = self.rollout_sync(key[len(ROLLOUT) :]) if self.rollout_sync else None
                if again is not None:
                    self.queue.add(key, again)
                self._errors.pop(key, None)
                return
            with logs.bound(agent_id=key):
                outcome = self.agents.sync(key)
            self._after(key, outcome)
        except (ClawHQError, SQLAlchemyError) as exc:
            error = (
                exc
                if isinstance(exc, ClawHQError)
                else DatabaseUnavailable("the database is unavailable; try again shortly")
            )
            self.completions.resolve(key, None, error, all_=True)
            self._retry(key, f"sync of {key} failed: {error.message}")
        except Exception:  # one bad sync never stops the controller
            log.exception("sync of %s failed", key)
            self._retry(key, None)

    def _after(self, key: str, outcome: Outcome) -> None:
        self.completions.resolve(key, outcome.handled, outcome.error, all_=outcome.deleted)
        if outcome.error is not None:
            self._retry(key, f"agent {key}: {outcome.error.message}")
            return
        self._errors.pop(key, None)
        if outcome.again_in is not None:
            self.queue.add(key, outcome.again_in)
        if outcome.rollout_id is not None:
            self.enqueue_rollout(outcome.rollout_id)

    def _retry(self, key: str, message: str | None) -> None:
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

    def _work(self, queue: WorkQueue[str], handle: Callable[[str], None]) -> None:
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
