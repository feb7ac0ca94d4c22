"""The event stream's reconnects over FakeRuntime, with the sources' real threads: after the
engine comes back, one full listing makes the cache (and so the API) truthful again, even when
the engine answers events before it can list."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from clawhq.context import AppContext, build_context
from clawhq.errors import EngineError
from clawhq.settings import Settings
from tests.conftest import TEST_IMAGE
from tests.doubles.runtime import FakeRuntime


def eventually(check: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def watched(settings: Settings) -> Iterator[tuple[AppContext, FakeRuntime]]:
    """The sources' threads over a fake engine; no periodic resync within the test."""
    fake = FakeRuntime(images={TEST_IMAGE})
    quiet = settings.model_copy(update={"reconcile_interval": 3600.0, "supervise": False})
    context = build_context(quiet, runtime=fake, threads=False)
    context.sources.start()
    try:
        yield context, fake
    finally:
        context.sources.stop()
        fake.close()
        context.close()


def test_a_reconnect_lists_everything_before_trusting_the_stream(
    watched: tuple[AppContext, FakeRuntime],
) -> None:
    context, fake = watched
    observed = context.deps.observed
    assert eventually(lambda: observed.fresh)  # the first full listing
    # dockerd restarts: its stream ends, then it is unreachable for a moment ...
    fake.reachable = False
    fake.close()
    assert eventually(lambda: not observed.fresh)
    # ... then it answers again, events first, while it cannot list yet (its volume store
    # is still loading, say): the cache must not be trusted on the stream's word alone.
    fake.fail["list_managed"] = EngineError("list agent containers: volume store not ready")
    fake.reachable = True
    time.sleep(1.5)  # the stream reconnects; its catch-up listing fails and is retried
    assert not observed.fresh
    del fake.fail["list_managed"]
    assert eventually(lambda: observed.fresh), "no listing after the engine came back"


def test_a_listing_that_began_before_the_engine_went_is_not_trusted() -> None:
    from clawhq.controller.observed import ObservedState

    observed = ObservedState()
    epoch = observed.epoch
    observed.lost()  # the engine went while the listing was under way
    assert observed.replace_all([], epoch) is False
    assert not observed.fresh
    assert observed.replace_all([], observed.epoch) is True
