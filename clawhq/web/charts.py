"""Usage charts as plain numbers for SVG (no script draws them, and CSP allows no inline
style): tokens per UTC day as bars, and the month's use against the plan's budget."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from clawhq.api.schemas_usage import UsageGroup

WIDTH = 600
HEIGHT = 160
#: Room left of the bars for the scale, and under them for the day labels.
LEFT = 48
BOTTOM = 20


@dataclass(frozen=True)
class Bar:
    day: str
    tokens: int
    x: float
    y: float
    width: float
    height: float
    label: bool  # whether this bar's day is written under it


@dataclass(frozen=True)
class DailyChart:
    bars: list[Bar]
    peak: int
    total: int
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    bottom: int = BOTTOM


def days(start: datetime, end: datetime) -> list[date]:
    """Every UTC day from ``start``'s to the one holding the instant before ``end``."""
    first = start.astimezone(UTC).date()
    last = (end.astimezone(UTC) - timedelta(microseconds=1)).date()
    span = max(0, (last - first).days)
    return [first + timedelta(days=n) for n in range(span + 1)]


def daily(groups: Iterable[UsageGroup], start: datetime, end: datetime) -> DailyChart:
    """Bars of total tokens per day (days without calls are there, at zero)."""
    by_day = {g.key: g.total_tokens for g in groups if g.key}
    every = days(start, end)
    peak = max([*by_day.values(), 0])
    room = HEIGHT - BOTTOM - 4
    step = (WIDTH - LEFT) / max(1, len(every))
    every_nth = max(1, len(every) // 8)
    bars = []
    for n, day in enumerate(every):
        tokens = by_day.get(day.isoformat(), 0)
        tall = room * tokens / peak if peak else 0.0
        bars.append(
            Bar(
                day=day.isoformat(),
                tokens=tokens,
                x=round(LEFT + n * step + step * 0.1, 2),
                y=round(HEIGHT - BOTTOM - tall, 2),
                width=round(step * 0.8, 2),
                height=round(tall, 2),
                label=n % every_nth == 0,
            )
        )
    return DailyChart(bars, peak, sum(by_day.values()))


@dataclass(frozen=True)
class Budget:
    used: int
    monthly: int | None
    #: 0-100, for a ``<meter>`` (None: no cap, nothing to measure against).
    percent: int | None
    over: bool


def budget(used: int, monthly: int | None) -> Budget:
    if monthly is None:
        return Budget(used, None, None, False)
    percent = 100 if monthly == 0 else min(100, round(used * 100 / monthly))
    return Budget(used, monthly, percent, used >= monthly)
