"""Per-user resource use and per-agent workspace disks, sampled in the background for the
metrics.

Quick samples (no second reading by the engine) keep a sweep cheap; CPU is computed from two
consecutive samples of the same container.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

from clawhq.errors import ClawHQError
from clawhq.runtime import ContainerStats, Runtime

log = logging.getLogger(__name__)


def cpu_percent(before: ContainerStats, after: ContainerStats) -> float:
    """CPU use between two samples; 100 is one full core."""
    system = after.system_usage_ns - before.system_usage_ns
    if system <= 0:
        return 0.0
    used = max(0, after.cpu_usage_ns - before.cpu_usage_ns)
    return round(used / system * after.online_cpus * 100, 2)


class UsageSampler:
    """Samples every running agent container every ``interval`` seconds."""

    def __init__(self, runtime: Runtime, interval: float, workers: int = 4) -> None:
        self.runtime = runtime
        self.interval = interval
        self._previous: dict[str, ContainerStats] = {}
        self._usage: dict[str, tuple[float, int]] = {}
        self._disks: list[tuple[str, str, int, int]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="clawhq-usage")
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="clawhq-usage", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def by_user(self) -> list[tuple[str, float, int]]:
        """``(user_id, cpu_percent, memory_bytes)`` from the last sweep."""
        with self._lock:
            return [(user, cpu, memory) for user, (cpu, memory) in sorted(self._usage.items())]

    def disks(self) -> list[tuple[str, str, int, int]]:
        """``(user_id, agent_id, used_bytes, size_bytes)`` of each capped workspace (kept
        ones too: they hold disk), from the last sweep."""
        with self._lock:
            return list(self._disks)

    def sweep(self) -> None:
        self._sweep_disks()
        try:
            running = [c for c in self.runtime.list_managed() if c.is_running and c.user_id]
        except ClawHQError as exc:
            log.warning("usage sweep skipped: %s", exc.message)
            return
        samples = self._pool.map(self._sample, [c.id for c in running])
        totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        current: dict[str, ContainerStats] = {}
        for container, sample in zip(running, samples, strict=True):
            if sample is None:
                continue
            current[container.id] = sample
            before = self._previous.get(container.id)
            totals[str(container.user_id)][0] += cpu_percent(before, sample) if before else 0.0
            totals[str(container.user_id)][1] += sample.memory_bytes
        with self._lock:
            self._previous = current
            self._usage = {user: (round(cpu, 2), int(mem)) for user, (cpu, mem) in totals.items()}

    def _sweep_disks(self) -> None:
        try:
            volumes = self.runtime.list_volumes()
        except ClawHQError as exc:
            log.warning("disk sweep skipped: %s", exc.message)
            return
        found = []
        for volume in sorted(volumes, key=lambda v: v.name):
            usage = self.runtime.disk_usage(volume.name)
            if usage is not None and volume.agent_id:
                found.append((volume.user_id, volume.agent_id, usage.used_bytes, usage.size_bytes))
        with self._lock:
            self._disks = found

    def _sample(self, container_id: str) -> ContainerStats | None:
        try:
            return self.runtime.stats(container_id, quick=True)
        except ClawHQError:
            return None  # gone since the listing

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sweep()
            except Exception:  # sampling must outlive any one bad sweep
                log.exception("usage sweep failed")
            self._stop.wait(self.interval)
