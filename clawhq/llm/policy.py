"""What a model call may ask the provider to do by itself: the body policy of the LLM gateway.
Pure (it logs its refusals).

A provider-side tool makes the provider fetch URLs, search the web or run code on the agent's
behalf: past the egress firewall, and often billed apart from the tokens the meter reads. Each
provider's tools are in one table below, each with its class:

- ``client``: the model only asks; the agent runs it in its own container (function tools,
  bash, text editor, computer use…). Always allowed.
- ``internal``: runs at the provider over the request's own content, fetches nothing, costs
  tokens (tool search over the request's own tools). Always allowed.
- ``open``: fetches or runs code at the provider, and what it costs is in the answer (tokens,
  or a count of uses the meter reads). Allowed to agents whose plan's egress is ``open``.
- ``refused``: what it costs is not in the answer (container hours, per-search fees, image
  tokens), or it reads what the key's owner stored (vector stores, files). Refused to all.

Content the provider would fetch from a URL (an image by URL…) is for ``open`` agents only
(``sources``). Fail closed: a tool whose type is not in its provider's table (a new one, a
typo, another provider's) is refused, and so is a body that is not one JSON object or has a key
twice (the provider's parser might keep the other one). A refusal is a 403 (400 for a body)
in the provider's format with a stable code, logged, before anything is sent.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from clawhq.errors import LlmRefused
from clawhq.llm import sources
from clawhq.llm.wires import FIGURE_CAP, Usage, Wire

log = logging.getLogger(__name__)

CLIENT, INTERNAL, OPEN, REFUSED = "client", "internal", "open", "refused"

_CLIENT_TOOLS = {"function": CLIENT, "custom": CLIENT}

#: Anthropic Messages, by type without its ``_YYYYMMDD`` version (no type: a custom tool).
#: Sources: platform.claude.com tool reference; anthropic-sdk-python ``ToolUnionParam``,
#: ``ServerToolUsage`` (``usage.server_tool_use.web_search_requests``, ``web_fetch_requests``).
ANTHROPIC_TOOLS: Mapping[str, str] = {
    "custom": CLIENT,
    "bash": CLIENT,
    "text_editor": CLIENT,
    "computer": CLIENT,
    "memory": CLIENT,
    "tool_search_tool_regex": INTERNAL,
    "tool_search_tool_bm25": INTERNAL,
    "web_search": OPEN,  # $10 per 1,000 searches, counted in usage.server_tool_use
    "web_fetch": OPEN,  # tokens only; counted in usage.server_tool_use
    "mcp_toolset": OPEN,  # the MCP connector: Anthropic calls the agent's MCP servers
    "code_execution": REFUSED,  # container hours, not in usage
    "advisor": REFUSED,  # a second model's work, not in the usage the meter reads
}
#: OpenAI Responses, by type. Sources: openai-python ``responses.ToolParam``; the answer's
#: ``web_search_call`` output items (each one a billed search).
OPENAI_TOOLS: Mapping[str, str] = {
    **_CLIENT_TOOLS,
    "namespace": CLIENT,  # a group of function/custom tools: those are checked too
    "local_shell": CLIENT,
    "apply_patch": CLIENT,
    "computer_use_preview": CLIENT,
    "computer": CLIENT,
    "shell": CLIENT,  # only with a local environment: a hosted container is refused below
    "tool_search": INTERNAL,
    "web_search": OPEN,
    "web_search_2025_08_26": OPEN,
    "web_search_preview": OPEN,
    "web_search_preview_2025_03_11": OPEN,
    "mcp": OPEN,  # remote MCP servers and connectors: tokens only
    "code_interpreter": REFUSED,  # a fee per container, not in usage
    "file_search": REFUSED,  # the key owner's vector stores; a fee per call
    "image_generation": REFUSED,  # image tokens billed at the image model's rates
    "programmatic_tool_calling": REFUSED,  # the model's code run in a hosted container
}
#: xAI Responses: its server-side tools bill per call; the meter does not read their counts.
XAI_TOOLS: Mapping[str, str] = {
    **_CLIENT_TOOLS,
    **dict.fromkeys(
        ("web_search", "x_search", "code_interpreter", "code_execution", "file_search", "mcp"),
        REFUSED,
    ),
    "collections_search": REFUSED,
}
#: Chat Completions (OpenAI, DeepSeek, xAI, Gemini's OpenAI-compatible endpoint): function and
#: custom tools only; search is requested by fields (below), not by a tool.
CHAT_TOOLS: Mapping[str, str] = _CLIENT_TOOLS
#: Gemini ``tools[]`` entries, by key (the API takes camelCase and snake_case alike).
#: Sources: ai.google.dev tools overview; the v1beta ``Tool`` message.
GEMINI_TOOLS: Mapping[str, str] = {
    **dict.fromkeys(("functionDeclarations", "function_declarations"), CLIENT),
    **dict.fromkeys(("computerUse", "computer_use"), CLIENT),
    **dict.fromkeys(("urlContext", "url_context"), OPEN),  # fetched pages count as tokens
    **dict.fromkeys(("codeExecution", "code_execution"), OPEN),  # tokens only
    # Grounding bills per prompt or search query, outside usageMetadata.
    **dict.fromkeys(("googleSearch", "google_search"), REFUSED),
    **dict.fromkeys(("googleSearchRetrieval", "google_search_retrieval"), REFUSED),
    **dict.fromkeys(("googleMaps", "google_maps"), REFUSED),
    **dict.fromkeys(("fileSearch", "file_search"), REFUSED),  # the key owner's stores
}
#: Body fields that ask for a provider-side tool or for state the gateway cannot see (a
#: stored prompt may carry tools; a cached content may carry tools and is billed by the hour).
ANTHROPIC_FIELDS: Mapping[str, str] = {"mcp_servers": OPEN, "container": REFUSED}
RESPONSES_FIELDS: Mapping[str, str] = {"prompt": REFUSED}
CHAT_FIELDS: Mapping[str, str] = {
    "web_search_options": REFUSED,  # OpenAI's search models: a fee per call, not in usage
    "search_parameters": REFUSED,  # xAI Live Search: a fee per source
}
GEMINI_FIELDS: Mapping[str, str] = dict.fromkeys(("cachedContent", "cached_content"), REFUSED)
#: Fields that leave the answer for later, past the meter (``background_refused``).
BACKGROUND_FIELDS = ("background", "deferred")
#: OpenAI models that search the web on every call, whatever the body asks.
_SEARCH_MODEL = re.compile(r"(?:^|-)search(?:-|$)")
_VERSIONED = re.compile(r"(.+?)_\d{8}")


@dataclass(frozen=True)
class _Rules:
    tools: Mapping[str, str]
    fields: Mapping[str, str]


_ANTHROPIC_ALIKE = _Rules({"custom": CLIENT}, ANTHROPIC_FIELDS)
_RULES: Mapping[tuple[str, Wire], _Rules] = {
    ("anthropic", Wire.ANTHROPIC): _Rules(ANTHROPIC_TOOLS, ANTHROPIC_FIELDS),
    ("openai", Wire.OPENAI_RESPONSES): _Rules(OPENAI_TOOLS, RESPONSES_FIELDS),
    ("xai", Wire.OPENAI_RESPONSES): _Rules(XAI_TOOLS, {**RESPONSES_FIELDS, **CHAT_FIELDS}),
    ("google", Wire.GEMINI): _Rules(GEMINI_TOOLS, GEMINI_FIELDS),
}
#: Any other provider and wire: DeepSeek's and xAI's Anthropic-compatible endpoints take
#: custom tools only; every Chat Completions endpoint takes function and custom tools.
_DEFAULT_RULES = {
    Wire.ANTHROPIC: _ANTHROPIC_ALIKE,
    Wire.OPENAI_CHAT: _Rules(CHAT_TOOLS, CHAT_FIELDS),
    Wire.OPENAI_RESPONSES: _Rules(CHAT_TOOLS, RESPONSES_FIELDS),
    Wire.GEMINI: _Rules({}, GEMINI_FIELDS),
}


def check(
    provider: str,
    wire: Wire,
    body: bytes,
    *,
    egress_open: bool,
    agent_id: str = "",
    default_output: int,
) -> Usage:
    """Refuses a model call the policy does not allow (``LlmRefused``, logged with what it
    names, never the body); for one it allows, the usage to charge should its answer report
    none (:func:`worst_case_tokens`)."""
    try:
        obj = _object(body)
        _check(provider, wire, obj, egress_open)
    except LlmRefused as refused:
        log.info(
            "refused a %s call of agent %s: %s (%s)",
            provider,
            agent_id,
            refused.code,
            refused.message,
        )
        raise
    return _worst_case(obj, len(body), default_output)


def _object(body: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(body, object_pairs_hook=_no_repeats)
    except (ValueError, RecursionError):
        obj = None
    if not isinstance(obj, dict):
        raise LlmRefused(
            400,
            "invalid",
            "llm_body_unreadable",
            "the body is not one JSON object with each key once, as a model call's is",
        )
    return obj


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("a key twice")
    return obj


def _check(provider: str, wire: Wire, obj: dict[str, Any], egress_open: bool) -> None:
    rules = _RULES.get((provider, wire)) or _DEFAULT_RULES[wire]
    for name in BACKGROUND_FIELDS:
        if obj.get(name):
            raise LlmRefused(
                403,
                "permission",
                "llm_background_refused",
                f"{name!r} is refused by ClawHQ's LLM gateway: an answer left for later "
                "is fetched past the meter; ask for the answer in this call (stream it)",
            )
    if not egress_open and (fetched := sources.fetched_url(wire, obj)) is not None:
        raise LlmRefused(
            403,
            "permission",
            "llm_url_source_refused",
            f"ClawHQ's LLM gateway refuses {fetched}: the provider would fetch it, past this "
            "agent's egress policy (only agents whose plan's egress is 'open' may); send the "
            "content inline (base64)",
        )
    for name, kind in rules.fields.items():
        if obj.get(name):
            _allow(f"the {name!r} field", kind, egress_open)
    if provider == "google" and wire is Wire.OPENAI_CHAT and _cached_content(obj):
        _allow("extra_body.google.cached_content", REFUSED, egress_open)
    model = obj.get("model")
    if provider == "openai" and isinstance(model, str) and _SEARCH_MODEL.search(model):
        _allow(f"the search model {model[:64]!r}", REFUSED, egress_open)
    tools = obj.get("tools")
    if tools is None:
        return
    if not isinstance(tools, list):
        raise _refused("'tools' is not a list")
    for tool in tools:
        if wire is Wire.GEMINI:
            _gemini_tool(tool, rules.tools, egress_open)
        else:
            _typed_tool(wire, tool, rules.tools, egress_open)


def _typed_tool(wire: Wire, tool: object, table: Mapping[str, str], egress_open: bool) -> None:
    if not isinstance(tool, dict):
        raise _refused("a tool that is not an object")
    kind_of = tool.get("type")
    if wire is Wire.ANTHROPIC and kind_of is None:
        kind_of = "custom"
    if not isinstance(kind_of, str):
        raise _refused("a tool without a type")
    name = kind_of
    if wire is Wire.ANTHROPIC and (versioned := _VERSIONED.fullmatch(kind_of)):
        name = versioned.group(1)
    kind = table.get(name)
    if kind is None:
        raise _refused(f"the tool type {kind_of[:64]!r}: it is not one ClawHQ knows")
    if name == "shell" and not _local(tool.get("environment")):
        kind = REFUSED  # a shell in a hosted container: code run at the provider
    _allow(f"the provider-side tool {kind_of[:64]!r}", kind, egress_open)
    if name == "namespace":
        inner = tool.get("tools")
        if not isinstance(inner, list):
            raise _refused("a namespace without a list of tools")
        for each in inner:
            _typed_tool(wire, each, _CLIENT_TOOLS, egress_open)


def _gemini_tool(tool: object, table: Mapping[str, str], egress_open: bool) -> None:
    if not isinstance(tool, dict):
        raise _refused("a tool that is not an object")
    for key, value in tool.items():
        kind = table.get(key)
        if kind is None:
            raise _refused(f"the tool {key[:64]!r}: it is not one ClawHQ knows")
        if value is not None:
            _allow(f"the provider-side tool {key!r}", kind, egress_open)


def _allow(what: str, kind: str, egress_open: bool) -> None:
    if kind in (CLIENT, INTERNAL) or (kind == OPEN and egress_open):
        return
    if kind == OPEN:
        raise _refused(
            f"{what}: it fetches or runs code at the provider, past this agent's egress "
            "policy (only agents whose plan's egress is 'open' may use it)"
        )
    raise _refused(
        f"{what}: what it costs is not in the provider's answer, or it reads "
        "what the key's owner stored"
    )


def _refused(what: str) -> LlmRefused:
    return LlmRefused(
        403, "permission", "llm_provider_tool_refused", f"ClawHQ's LLM gateway refuses {what}"
    )


def _local(environment: object) -> bool:
    return environment is None or (
        isinstance(environment, dict) and environment.get("type") == "local"
    )


def _cached_content(obj: dict[str, Any]) -> bool:
    for outer in (obj, obj.get("extra_body")):
        google = outer.get("google") if isinstance(outer, dict) else None
        if isinstance(google, dict) and google.get("cached_content"):
            return True
    return False


# -- what an answer without usage is charged ---------------------------------------------------

#: Bytes of request body per token, for the input estimate: few tokens are shorter.
BYTES_PER_TOKEN = 4
#: The output a request may ask for that is believed, per choice, and the choices.
OUTPUT_CAP, CHOICES_CAP = 1 << 20, 128
#: Where each wire's requests cap their output (a body holds its own wire's only).
_OUTPUT_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
_GEMINI_OUTPUT_FIELDS = ("maxOutputTokens", "max_output_tokens")


def worst_case_tokens(provider: str, body: bytes, *, default_output: int = 65_536) -> int:
    """The most a call can cost: its body's size over :data:`BYTES_PER_TOKEN`, plus the output
    it asks for at most (the largest of ``max_tokens``…, times its choices), or
    ``default_output`` where it sets none. The budget's reservations estimate the same: the
    two should become one."""
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        obj = None
    found = obj if isinstance(obj, dict) else {}
    return _worst_case(found, len(body), default_output).total_tokens


def _worst_case(obj: dict[str, Any], size: int, default_output: int) -> Usage:
    config = obj.get("generationConfig", obj.get("generation_config"))
    config = config if isinstance(config, dict) else {}
    asked = [obj.get(key) for key in _OUTPUT_FIELDS]
    asked += [config.get(key) for key in _GEMINI_OUTPUT_FIELDS]
    output = max((n for n in map(_count, asked) if n is not None), default=default_output)
    choices = _count(obj.get("n", config.get("candidateCount", config.get("candidate_count"))))
    many = min(max(choices or 1, 1), CHOICES_CAP)
    return Usage(
        input_tokens=-(-size // BYTES_PER_TOKEN),
        output_tokens=min(min(output, OUTPUT_CAP) * many, FIGURE_CAP),
    )


def _count(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def charged(usage: Usage, status: int, worst: Usage) -> Usage:
    """What a metered call is charged: the usage its answer reported, or ``worst`` for a
    successful answer that reported none (a provider that left it out, a stream cut short
    before its usage event). Never nothing for an answer that was served."""
    if usage.seen or not 200 <= status < 300:
        return usage
    return Usage(
        input_tokens=worst.input_tokens,
        output_tokens=worst.output_tokens,
        model=usage.model,
    )
