"""The controller's work queue: coalescing, one worker per key, timers, close, and threads."""

from __future__ import annotations

import random
import threading
import time

import pytest

from clawhq.controller.clock import SystemClock
from clawhq.controller.queue import WorkQueue
from tests.doubles.clock import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def queue(clock: ManualClock) -> WorkQueue[str]:
    return WorkQueue(clock)


def drain(queue: WorkQueue[str]) -> list[str]:
    """Take and finish everything due now, in order."""
    taken = []
    while (key := queue.get_nowait()) is not None:
        taken.append(key)
        queue.done(key)
    return taken


def test_duplicates_coalesce(queue: WorkQueue[str]) -> None:
    for key in ("a", "a", "b", "a", "b", "c"):
        queue.add(key)
    assert queue.pending() == 3
    assert drain(queue) == ["a", "b", "c"]
    assert queue.get_nowait() is None


def test_a_key_added_while_processed_is_queued_again_after_done(queue: WorkQueue[str]) -> None:
    queue.add("a")
    queue.add("b")
    assert queue.get_nowait() == "a"
    queue.add("a")
    queue.add("a")  # several adds while processing: one more turn, not two
    assert queue.busy()
    # Not handed to a second worker meanwhile: another get sees only b.
    assert queue.get_nowait() == "b"
    assert queue.get_nowait() is None
    queue.done("b")
    assert queue.get_nowait() is None
    queue.done("a")
    assert queue.pending() == 1
    assert queue.get_nowait() == "a"
    queue.done("a")
    assert queue.get_nowait() is None
    assert not queue.busy()


def test_done_without_a_new_add_does_not_requeue(queue: WorkQueue[str]) -> None:
    queue.add("a")
    assert queue.get_nowait() == "a"
    queue.done("a")
    assert queue.get_nowait() is None


def test_delayed_adds_are_due_only_after_the_clock_moves(
    queue: WorkQueue[str], clock: ManualClock
) -> None:
    queue.add("late", 5.0)
    queue.add("later", 8.0)
    queue.add("soon", 1.0)
    assert queue.get_nowait() is None
    assert not queue.busy()
    clock.advance(0.999)
    assert queue.get_nowait() is None
    clock.advance(0.001)
    assert drain(queue) == ["soon"]
    clock.advance(3.9)
    assert queue.get_nowait() is None
    clock.advance(10)
    assert drain(queue) == ["late", "later"]  # both due: in order of their due time


@pytest.mark.parametrize("delay", [0.0, -3.0], ids=["zero", "negative"])
def test_no_delay_is_now(queue: WorkQueue[str], delay: float) -> None:
    queue.add("a", delay)
    assert queue.get_nowait() == "a"


def test_a_timer_for_a_queued_key_coalesces(queue: WorkQueue[str], clock: ManualClock) -> None:
    queue.add("a")
    queue.add("a", 2.0)
    clock.advance(2.0)
    assert drain(queue) == ["a"]


def test_a_key_keeps_only_its_earliest_timer(queue: WorkQueue[str], clock: ManualClock) -> None:
    """A level-driven sync sets its own next timer, so later ones would only pile up (a
    stopped agent resynced every minute would gather a day's worth of them)."""
    queue.add("a", 6.0)
    queue.add("a", 2.0)  # earlier: it replaces the 6 s one
    queue.add("a", 9.0)  # later: dropped
    clock.advance(2.0)
    assert drain(queue) == ["a"]
    clock.advance(10.0)
    assert drain(queue) == []  # neither the 6 s nor the 9 s timer is left
    queue.add("a", 1.0)  # once fired, a new one can be set
    clock.advance(1.0)
    assert drain(queue) == ["a"]


def test_a_timer_due_while_processed_waits_for_done(
    queue: WorkQueue[str], clock: ManualClock
) -> None:
    queue.add("a")
    queue.add("a", 1.0)
    assert queue.get_nowait() == "a"
    clock.advance(1.0)
    assert queue.get_nowait() is None  # due, but a is being worked on
    queue.done("a")
    assert drain(queue) == ["a"]


def test_get_times_out_when_nothing_is_due(queue: WorkQueue[str]) -> None:
    queue.add("a", 60.0)  # on the manual clock: never due while it stands still
    began = time.monotonic()
    assert queue.get(timeout=0.05) is None
    assert time.monotonic() - began < 0.5


def test_get_wakes_on_add(clock: ManualClock) -> None:
    queue: WorkQueue[str] = WorkQueue(clock)
    got: list[str | None] = []
    worker = threading.Thread(target=lambda: got.append(queue.get(timeout=2.0)))
    worker.start()
    queue.add("a")
    worker.join(timeout=2.0)
    assert got == ["a"]


def test_close_wakes_waiters_and_ignores_new_adds(queue: WorkQueue[str]) -> None:
    got: list[str | None] = []
    ready = threading.Event()

    def wait() -> None:
        ready.set()
        got.append(queue.get())  # no timeout: only close ends it

    worker = threading.Thread(target=wait, daemon=True)
    worker.start()
    ready.wait(1.0)
    queue.close()
    worker.join(timeout=1.0)
    assert not worker.is_alive()
    assert got == [None]
    queue.add("a")
    assert queue.pending() == 0
    assert queue.get(timeout=0.01) is None


def test_closed_workers_get_nothing_more(queue: WorkQueue[str]) -> None:
    queue.add("a")
    queue.close()
    began = time.monotonic()
    assert queue.get(timeout=1.0) is None  # at once, not after the timeout
    assert time.monotonic() - began < 0.5


def test_four_threads_never_share_a_key_and_miss_no_add() -> None:
    """200 keys added in bursts (some on timers) while 4 workers process them."""
    queue: WorkQueue[int] = WorkQueue(SystemClock())
    lock = threading.Lock()
    active: set[int] = set()
    overlaps: list[int] = []
    seq = 0
    last_add: dict[int, int] = {}
    last_start: dict[int, int] = {}
    processed = 0
    stop = threading.Event()
    rng = random.Random(7)

    def work() -> None:
        nonlocal seq, processed
        while not stop.is_set():
            key = queue.get(timeout=0.05)
            if key is None:
                continue
            with lock:
                if key in active:
                    overlaps.append(key)
                active.add(key)
                seq += 1
                last_start[key] = seq
            time.sleep(0.002 if key % 7 == 0 else 0.0002)  # adds land while keys are worked on
            with lock:
                active.discard(key)
                processed += 1
            queue.done(key)

    def add(key: int, delay: float = 0.0) -> None:
        nonlocal seq
        with lock:
            seq += 1
            last_add[key] = seq
        queue.add(key, delay)

    workers = [threading.Thread(target=work, daemon=True) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        for burst in range(6):
            keys = list(range(200)) if burst % 2 == 0 else rng.sample(range(200), 80)
            for key in keys:
                add(key, 0.01 if key % 11 == 0 and burst == 5 else 0.0)
            time.sleep(0.01)
        for n in range(100):  # a few hot, slow keys on a short queue
            add(n % 4 * 7)
            time.sleep(0.0005)
        for _ in range(3):  # the last adds, back to back: many land on keys being worked on
            for key in range(200):
                add(key)

        def missed() -> list[int]:
            with lock:
                return [k for k, s in last_add.items() if last_start.get(k, 0) < s]

        deadline = time.monotonic() + 5.0
        while (missed() or queue.busy()) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert missed() == []
        assert not queue.busy()
    finally:
        stop.set()
        queue.close()
        for worker in workers:
            worker.join(timeout=1.0)
    assert overlaps == []
    assert not any(worker.is_alive() for worker in workers)
    assert processed >= 200
