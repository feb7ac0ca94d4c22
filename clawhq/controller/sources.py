"""What feeds the controller besides operations: the engine's event stream and full resyncs.

- One thread follows the engine's events (``die``, ``oom``, ``start``, ``destroy``…) and queues
  the agent concerned; when the stream breaks, the cache is marked stale and it reconnects
  with backoff, then resyncs everything (the gap may have hidden events).
- A full resync lists every managed container once, replaces the observed cache, queues every
  agent and every active rollout, and removes stray containers: at start, after the event
  stream reconnects, and every ``CLAWHQ_RECONCILE_INTERVAL``.

Without supervision (``CLAWHQ_SUPERVISE=false``) the process still observes, so the API stays
truthful, but queues only agents whose start it follows itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from clawhq.controller.controller import Controller
from clawhq.controller.deps import ControllerDeps
from clawhq.controller.observed import observe_agent
from clawhq.controller.planner import plan
from clawhq.controller.rollouts import unfinished
from clawhq.db.models import Agent
from clawhq.errors import ClawHQError
from clawhq.runtime import labels

log = logging.getLogger(__name__)

MAX_EVENT_BACKOFF = 30.0
#: The events that change what an agent is doing. Not ``create``: a container is created, then
#: started, and one made by hand (or by another process) must not be judged in between.
WATCHED_EVENTS = frozenset({"start", "die", "oom", "kill", "stop", "destroy"})
#: Seconds between looks for rollouts begun elsewhere (``clawhq rollout start``).
ROLLOUT_POLL_TICKS = 2


class Sources:
    def __init__(self, controller: Controller, deps: ControllerDeps) -> None:
        self.controller = controller
        self.deps = deps
        self.supervise = deps.supervise
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._last_resync = 0.0
        self._started_at: datetime | None = None

    def start(self) -> None:
        # Events from the moment supervision starts, so none falls between the first full
        # listing (the resync thread's) and the stream's subscription.
        self._started_at = datetime.now(UTC)
        for name, target in (("events", self._follow_events), ("resync", self._resync_loop)):
            thread = threading.Thread(target=target, name=f"clawhq-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread.name != "clawhq-events":  # blocked on the engine's stream; daemon
                thread.join(timeout=5)

    @property
    def threads(self) -> list[threading.Thread]:
        return list(self._threads)

    # -- full resync ----------------------------------------------------------------------

    def resync(self, *, strict: bool = False) -> list[str]:
        """List everything, refresh the cache, queue every agent; returns the agents queued.

        With ``strict`` an engine that cannot list raises (the event stream's reconnect
        retries until one listing works); otherwise the cache is marked stale and it says so.
        """
        self._last_resync = time.monotonic()
        parts = self.deps
        epoch = parts.observed.epoch
        try:
            containers = parts.runtime.list_managed()
            parts.observed.replace_all(containers, epoch)
        except ClawHQError as exc:
            parts.observed.lost()
            if strict:
                raise
            log.warning("resync: engine unavailable: %s", exc.message)
            return []
        try:
            self._resolve_images()
            with parts.read_sessions() as session:
                agent_ids = list(session.scalars(select(Agent.id)))
                rollouts = unfinished(session)
        except ClawHQError as exc:
            log.warning("resync: engine unavailable: %s", exc.message)
            return []
        except SQLAlchemyError as exc:
            log.warning("resync: database unavailable: %s", type(exc).__name__)
            return []
        known = set(agent_ids)
        strays = [c for c in containers if c.agent_id not in known]
        queued = agent_ids if self.supervise else []
        for agent_id in queued:
            self.controller.enqueue(agent_id)
        for rollout_id in rollouts:
            self.controller.enqueue_rollout(rollout_id)
        if self.supervise and strays:
            for action in plan(None, strays, None, parts.clock.now()):
                self.controller.remove_stray(action)
        return queued

    def _resolve_images(self) -> None:
        parts = self.deps
        refs = {parts.settings.agent_image}
        with parts.read_sessions() as session:
            from clawhq.db.models import Plan

            refs |= set(session.scalars(select(Agent.image).where(Agent.image.is_not(None))))
            refs |= set(session.scalars(select(Plan.image).where(Plan.image.is_not(None))))
        image_id: Callable[[str], str | None] | None = getattr(parts.runtime, "image_id", None)
        if image_id is None:
            return
        resolved = {}
        for ref in refs - {None}:
            found = image_id(str(ref))
            if found:
                resolved[str(ref)] = found
        parts.observed.set_images(resolved)

    def _resync_loop(self) -> None:
        self.resync()
        interval = self.deps.settings.reconcile_interval
        ticks = 0
        while not self._stop.wait(1.0):
            ticks += 1
            try:
                if time.monotonic() - self._last_resync >= interval:
                    self.resync()
                elif ticks % ROLLOUT_POLL_TICKS == 0:
                    self._queue_rollouts()  # started from the CLI: no one queued them
            except Exception:  # never let one bad pass stop supervision
                log.exception("resync failed")

    def _queue_rollouts(self) -> None:
        try:
            with self.deps.read_sessions() as session:
                for rollout_id in unfinished(session):
                    self.controller.enqueue_rollout(rollout_id)
        except SQLAlchemyError as exc:
            log.warning("rollouts: database unavailable: %s", type(exc).__name__)

    # -- the event stream -----------------------------------------------------------------

    def on_event(self, agent_id: str, container_id: str = "") -> None:
        """Something happened to one of the agent's containers: the sync that follows inspects
        that container (the engine's listing may not show the change yet)."""
        if container_id:
            self.deps.observed.note(agent_id, container_id)
        if self.supervise or self.controller.prober.starting(agent_id):
            self.controller.enqueue(agent_id)
            return
        try:  # observe only: keep the cache true
            found = observe_agent(self.deps.runtime, self.deps.observed, agent_id)
        except ClawHQError:
            return
        self.deps.observed.replace_agent(agent_id, found)

    def _follow_events(self) -> None:
        since: datetime | None = self._started_at
        delay = 1.0
        first = True
        while not self._stop.is_set():
            try:
                stream = self.deps.runtime.events(since=since or datetime.now(UTC))
                if not first:
                    # What the gap hid: one full listing before any further event, so the API
                    # is truthful again. An engine still coming up may answer events and not
                    # yet list: that counts as the stream failing, and is tried again.
                    self.resync(strict=True)
                first = False
                for event in stream:
                    if self._stop.is_set():
                        return
                    since = event.time
                    agent_id = event.labels.get(labels.AGENT_ID)
                    log.debug("engine event %s of agent %s", event.action, agent_id)
                    if agent_id and event.action in WATCHED_EVENTS:
                        self.on_event(agent_id, event.container_id)
                    delay = 1.0
                if self._stop.is_set():
                    return
                raise ClawHQError("the engine closed its event stream")
            except Exception as exc:  # the stream (or its catch-up) broke: reconnect
                if self._stop.is_set():
                    return
                self.deps.observed.lost()
                why = exc.message if isinstance(exc, ClawHQError) else repr(exc)
                if not isinstance(exc, ClawHQError | SQLAlchemyError):
                    log.exception("engine events: unexpected error")
                log.warning("engine events: %s; reconnecting in %.0fs", why, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, MAX_EVENT_BACKOFF)
                first = False
