"""What a benchmark check returns: one :class:`Finding` with its :class:`Outcome`.

``FAIL`` fails ``clawhq doctor --security``. ``EXCEPTION`` is a deliberate, documented
deviation (ClawHQ's supervisor, not Docker, restarts agents and probes their health) and
``INFO`` is something an operator should know; neither fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class Outcome(StrEnum):
    PASS = "pass"
    FAIL = "FAIL"
    EXCEPTION = "exception"
    INFO = "info"


@dataclass(frozen=True)
class Finding:
    ref: str  # "5.4"; "ClawHQ" for ClawHQ's own items
    title: str
    outcome: Outcome
    detail: str

    @property
    def failed(self) -> bool:
        return self.outcome is Outcome.FAIL


def pass_or_fail(ref: str, title: str, ok: bool, good: str, bad: str) -> Finding:
    """A ``PASS`` finding saying ``good`` if ``ok``, else a ``FAIL`` saying ``bad``."""
    return Finding(ref, title, Outcome.PASS if ok else Outcome.FAIL, good if ok else bad)


def failed(findings: Sequence[Finding]) -> list[Finding]:
    return [f for f in findings if f.failed]
