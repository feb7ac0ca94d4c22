"""The LLM gateway: ``/llm/<provider>/<the provider's own API path>``.

An agent calls it as it would call its provider, with its ClawHQ token where the provider's
key would go. The gateway finds the agent by the token, checks its limits, holds the call's
worst case against its owner's budget (its output cap lowered to fit: :mod:`.reservations`),
sends the call on with the real key to the upstream of ``CLAWHQ_LLM_UPSTREAM_<X>``
(nothing the agent sends can choose another host), relays the answer unbuffered and writes
what it cost to the ledger. Refusals come in the provider's own error format.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, replace

import httpx
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request
from starlette.responses import Response

from clawhq.crypto import Keyring
from clawhq.db.loop_reads import LoopReads
from clawhq.errors import LlmRefused, NotFound, PayloadTooLarge
from clawhq.llm import ledger, limits, metering, paths, policy, reservations
from clawhq.llm.callers import Caller, find_caller, real_key
from clawhq.llm.providers import PROVIDERS, Provider, client_token, refusal
from clawhq.llm.relay import (
    Ending,
    MeteredResponse,
    PassThrough,
    upstream_headers,
    upstream_query,
)
from clawhq.observability.metrics import Metrics
from clawhq.proxy.http import read_body
from clawhq.settings import Settings

log = logging.getLogger(__name__)

#: What a path after /llm/<provider> may hold: the characters of real API paths, no dot
#: segments, nothing that could end the path and start a host.
_SAFE_PATH = re.compile(r"^(/[A-Za-z0-9._~:@!$&'()*+,;=-]*)+$")
#: Distinct model names the metrics keep; more are counted as ``other`` (bounded series).
MAX_MODEL_LABELS = 200


@dataclass
class Gateway:
    settings: Settings
    keyring: Keyring
    reads: LoopReads
    sessions: sessionmaker[Session]
    metrics: Metrics

    def __post_init__(self) -> None:
        self.limits = limits.AgentLimits(self.settings.llm_calls_per_agent)
        self.budgets = limits.Budgets()
        self.reservations = reservations.Reservations(
            self.sessions.kw["bind"], self.settings.resolved_database_url
        )
        self.ledger = ledger.LedgerWriter(
            self.sessions,
            upkeep=self.reservations.upkeep,
            upkeep_every=reservations.RENEW_EVERY,
        )
        self._models: set[str] = set()
        timeout = httpx.Timeout(self.settings.llm_timeout, connect=10.0)
        self._client = httpx.AsyncClient(
            timeout=timeout,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
            follow_redirects=False,
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self._client.aclose()
        await self.reservations.aclose()
        await asyncio.get_running_loop().run_in_executor(None, self.ledger.close)

    async def handle(self, request: Request, provider_name: str, path: str) -> Response:
        provider = PROVIDERS.get(provider_name)
        if provider is None:
            raise NotFound(
                f"no LLM provider {provider_name!r}: one of {', '.join(PROVIDERS)}",
                code="llm_provider_not_found",
            )
        try:
            caller = await find_caller(
                self.reads, client_token(request.headers, request.query_params)
            )
            return await self._call(request, provider, caller, path)
        except LlmRefused as refused:
            self.metrics.llm_calls.labels(provider.name, "", "refused").inc()
            return refusal(provider, refused)

    async def _call(
        self, request: Request, provider: Provider, caller: Caller, path: str
    ) -> Response:
        if not _SAFE_PATH.match(path) or any(s in (".", "..") for s in path.split("/")):
            raise LlmRefused(
                404, "not_found", "llm_path_not_found", f"no such API path: {path[:200]}"
            )
        key = real_key(caller, provider, self.settings, self.keyring)
        if caller.budgeted:
            spent = await self.budgets.spent(
                self.reads, caller.user_id, bundled_only=not caller.budget_own_keys
            )
            if (over := limits.over_budget(caller, spent)) is not None:
                raise over
        try:
            body = await read_body(request, self.settings.llm_max_body)
        except PayloadTooLarge as exc:
            raise LlmRefused(413, "too_large", "llm_request_too_large", exc.message) from None
        wire = paths.relayed(provider.name, request.method, path)
        model = metering.model_of_request(wire, body, path) if wire else None
        strip, worst = False, None
        if wire is not None:
            worst = policy.check(
                provider.name,
                wire,
                body,
                egress_open=caller.egress_open,
                agent_id=caller.agent_id,
                default_output=self.settings.llm_unmetered_charge,
            )
            body, strip = metering.with_usage_requested(wire, body)
        self.limits.admit(caller)
        started = time.monotonic()
        held: reservations.Held | None = None
        try:
            if wire is not None and caller.budgeted:  # its worst case held, its cap in the body
                held = await self.reservations.hold(caller, provider.name, wire, path, body)
                body = held.body
            answer = await self._open(request, provider, path, key, body, caller.egress_open)
        except BaseException:
            self.limits.done(caller.agent_id, 0)
            if held is not None:
                self.ledger.release(self.reservations.forget(held.id))
            raise
        self.metrics.llm_first_byte_seconds.labels(provider.name).observe(
            time.monotonic() - started
        )
        if wire is None:  # a listing or a token count: relayed as it is
            meter: metering.Meter = PassThrough()
        else:
            meter = metering.meter_for(
                wire, answer.headers.get("content-type", ""), strip_usage=strip
            )

        def on_end(ending: Ending) -> None:
            if worst is not None:
                ending = self._billable(provider, caller, ending, worst)
            self._charge(
                caller,
                provider,
                model,
                wire is not None,
                ending,
                streamed=strip or _is_sse(answer),
                held=held,
            )

        return MeteredResponse(
            answer,
            meter,
            started=started,
            idle_seconds=self.settings.llm_timeout,
            rewrites=strip,
            on_end=on_end,
        )

    async def _open(
        self,
        request: Request,
        provider: Provider,
        path: str,
        key: str,
        body: bytes,
        egress_open: bool,
    ) -> httpx.Response:
        query = upstream_query(request.query_params.multi_items())
        url = httpx.URL(provider.upstream(self.settings) + path, params=query)
        headers = upstream_headers(
            request.headers.items(), provider.key_headers(key), egress_open=egress_open
        )
        outgoing = self._client.build_request(request.method, url, headers=headers, content=body)
        try:
            return await self._client.send(outgoing, stream=True)
        except httpx.TimeoutException:
            raise LlmRefused(
                504,
                "timeout",
                "llm_upstream_timeout",
                f"{provider.name} did not answer within {self.settings.llm_timeout:.0f} s "
                "(CLAWHQ_LLM_TIMEOUT)",
            ) from None
        except httpx.HTTPError as exc:
            log.warning("%s unreachable: %s", provider.name, type(exc).__name__)
            raise LlmRefused(
                502,
                "unavailable",
                "llm_upstream_unreachable",
                f"cannot reach {provider.name} right now",
            ) from None

    def _billable(
        self, provider: Provider, caller: Caller, ending: Ending, worst: metering.Usage
    ) -> Ending:
        """The ending as it is charged: a served answer without usage costs the call's worst
        case (``policy.charged``); the provider-side tool uses it reports are counted."""
        for tool, count in ending.usage.tool_uses.items():
            self.metrics.llm_tool_uses.labels(provider.name, caller.plan, tool).inc(count)
        usage = policy.charged(ending.usage, ending.status, worst)
        if usage is ending.usage:
            return ending
        self.metrics.llm_unmetered_calls.labels(provider.name, caller.plan).inc()
        log.warning(
            "a %s answer (status %d) to agent %s reported no usage: charged its worst case, "
            "%d tokens",
            provider.name,
            ending.status,
            caller.agent_id,
            usage.total_tokens,
        )
        return replace(ending, usage=usage)

    def _charge(
        self,
        caller: Caller,
        provider: Provider,
        asked_model: str | None,
        metered: bool,
        ending: Ending,
        *,
        streamed: bool,
        held: reservations.Held | None = None,
    ) -> None:
        usage = reservations.charged(held, ending.usage, ending.status)
        self.limits.done(caller.agent_id, usage.total_tokens)
        if metered and usage.total_tokens:
            bundled = caller.key_source == "bundled"
            self.budgets.charge(caller.user_id, usage.total_tokens, bundled=bundled)
        self.metrics.llm_calls.labels(provider.name, caller.plan, ending.outcome).inc()
        if not metered:
            return
        model = usage.model or asked_model
        label = self._model_label(model)
        for kind in ("input", "output", "cache_read", "cache_write"):
            amount = getattr(usage, f"{kind}_tokens")
            if amount:
                self.metrics.llm_tokens.labels(provider.name, label, caller.plan, kind).inc(amount)
        call = ledger.CallRecord(
            agent_id=caller.agent_id,
            user_id=caller.user_id,
            plan=caller.plan,
            provider=provider.name,
            model=model,
            key_source=caller.key_source,
            streamed=streamed,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            status=ending.status,
            outcome=ending.outcome,
            latency_ms=ending.latency_ms,
        )
        self.ledger.submit(call, None if held is None else self.reservations.forget(held.id))

    def _model_label(self, model: str | None) -> str:
        if not model:
            return ""
        if model in self._models or len(self._models) < MAX_MODEL_LABELS:
            self._models.add(model)
            return model
        return "other"


def _is_sse(answer: httpx.Response) -> bool:
    content_type: str = answer.headers.get("content-type", "")
    return content_type.startswith("text/event-stream")
