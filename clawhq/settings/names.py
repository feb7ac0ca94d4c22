"""The ``CLAWHQ_*`` variables ClawHQ knows, and a check for those it does not.

A variable nobody reads is a setting the operator believes in and ClawHQ ignores (a typo, or a
feature this version lacks): ``serve`` and ``doctor`` name each one with the closest known
name — a warning in development, a refusal to start in production.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

ENV_PREFIX = "CLAWHQ_"
#: Read outside the settings (the image build's cache), by the scripts, or by the test suite.
OTHER_NAMES = frozenset({"CLAWHQ_IMAGE_CACHE", "CLAWHQ_SCRIPTS_STATE"})
OTHER_PREFIXES = ("CLAWHQ_TEST_", "CLAWHQ_BENCH_")


def unknown_variables(environ: Mapping[str, str], known: Iterable[str]) -> list[str]:
    """One line for each ``CLAWHQ_*`` variable in ``environ`` that nothing reads, naming the
    closest known variable when one is close."""
    names = set(known) | OTHER_NAMES
    found = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in names:
            continue
        if upper.startswith(OTHER_PREFIXES):
            continue
        close = difflib.get_close_matches(upper, sorted(names), n=1, cutoff=0.85)
        hint = f" (did you mean {close[0]}?)" if close else ""
        found.append(f"{name} is not a ClawHQ setting and does nothing{hint}")
    return found
