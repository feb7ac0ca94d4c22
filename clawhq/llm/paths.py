"""Which calls the LLM gateway relays at all, per provider. Pure.

Fail closed: a ``POST`` is relayed only to a model call the meter reads (``wires.wire_for``)
or to a token count (free); a ``GET`` only to the few listings agents need (models). Anything
else is refused before it reaches the provider: batches bill later, outside any answer the
meter reads; uploads, vector stores and caches are storage the ledger does not see; stored
responses, chat completions and deferred results would hand back what another call produced
(or, on a bundled key, another user's), unmetered.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from clawhq.errors import LlmRefused
from clawhq.llm.wires import Wire, wire_for

_ID = r"/[A-Za-z0-9._:-]+"  # one model id (fine-tuned OpenAI ids hold colons)
#: Per provider: the GET paths relayed, unmetered (they cost nothing).
_GETS: Mapping[str, re.Pattern[str]] = {
    "anthropic": re.compile(rf"/v1/models(?:{_ID})?"),
    "openai": re.compile(rf"/v1/models(?:{_ID})?"),
    "google": re.compile(rf"/v1(?:beta)?/models(?:{_ID})?|/v1beta/openai/models(?:{_ID})?"),
    "deepseek": re.compile(rf"(?:/v1)?/models(?:{_ID})?"),
    "xai": re.compile(rf"/v1/models(?:{_ID})?"),
}
#: Per provider: the POST paths relayed unmetered, besides model calls (token counts).
_FREE_POSTS: Mapping[str, re.Pattern[str]] = {
    "anthropic": re.compile(r"/v1/messages/count_tokens"),
    "google": re.compile(rf"/v1(?:beta)?/models{_ID}:countTokens"),
}


def relayed(provider: str, method: str, path: str) -> Wire | None:
    """The wire of a model call, None for a free call (a listing, a token count), or a 404
    refusal for anything the gateway does not relay."""
    if method == "POST":
        wire = wire_for(provider, path)
        if wire is not None:
            return wire
        free = _FREE_POSTS.get(provider)
        if free is not None and free.fullmatch(path):
            return None
        raise LlmRefused(
            404,
            "not_found",
            "llm_path_not_served",
            f"POST {path[:200]} is not served by ClawHQ's LLM gateway: only model calls it "
            "meters and token counts are (no batches, files, stores or other endpoints)",
        )
    listing = _GETS.get(provider)
    if method == "GET" and listing is not None and listing.fullmatch(path):
        return None
    raise LlmRefused(
        404,
        "not_found",
        "llm_path_not_relayed",
        f"{method} {path[:200]} is not relayed by ClawHQ's LLM gateway: the only reads it "
        "passes are model listings",
    )
