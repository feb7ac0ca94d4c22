"""Long-lived responses are bounded: per user, in total, and in time (issue 13, item 2)."""

from __future__ import annotations

import pytest

from clawhq.api.streams import StreamSlots
from clawhq.errors import TooManyRequests
from clawhq.settings import Settings
from tests.conftest import running_app
from tests.doubles.runtime import FakeRuntime


def test_slots_per_user_and_in_total() -> None:
    slots = StreamSlots(per_user=2, total=3)
    a1, a2 = slots.acquire("a"), slots.acquire("a")
    with pytest.raises(TooManyRequests) as refused:
        slots.acquire("a")
    assert refused.value.code == "too_many_streams"
    b1 = slots.acquire("b")
    with pytest.raises(TooManyRequests):
        slots.acquire("c")  # the server's total
    a1()
    a1()  # giving back twice gives back once
    assert slots.open("a") == 1 and slots.open() == 2
    c1 = slots.acquire("c")
    for release in (a2, b1, c1):
        release()
    assert slots.open() == 0


def test_log_streams_are_capped_per_user_and_end_at_their_lifetime(
    settings: Settings, fake_runtime: FakeRuntime
) -> None:
    bounded = settings.model_copy(
        update={"supervise": False, "streams_per_user": 1, "stream_max_seconds": 0.5}
    )
    with running_app(bounded, fake_runtime, probe=lambda url: True) as api:
        me = api.user()
        agent = api.agent(me)
        deployed = api.client.post(f"/api/agents/{agent['id']}/deploy", headers=me).json()
        fake_runtime.written_logs[deployed["containerId"]] = ["hello"]
        url = f"/api/agents/{agent['id']}/logs?follow=true"
        slots = api.services.streams

        held = slots.acquire(me["X-User-Id"])  # one stream already open
        refused = api.client.get(url, headers=me)
        assert refused.status_code == 429 and refused.json()["code"] == "too_many_streams"
        held()

        with api.client.stream("GET", url, headers=me) as reply:
            assert reply.status_code == 200
            body = reply.read().decode()  # ends by itself: the lifetime is half a second
        assert "hello" in body
        assert "CLAWHQ_STREAM_MAX_SECONDS" in body
        assert slots.open() == 0  # its slot was given back
        progress = api.client.get(f"/api/agents/{agent['id']}/progress", headers=me)
        assert progress.status_code == 200 and slots.open() == 0
