"""Time, injected: the controller asks a clock, so tests can move time by hand
(``tests/doubles/clock.py``)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Wall-clock time (UTC): what is stored in the database."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back: what timers use."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()
