"""``/llm/{provider}/…``: agents' model calls, through ClawHQ's LLM gateway (clawhq/llm/).

Agents authenticate with their container's LLM token, sent where their provider's clients send
a key; the routes carry the provider's own API paths (``/llm/anthropic/v1/messages``,
``/llm/openai/v1/chat/completions``, ``/llm/google/v1beta/models/…:generateContent``…).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from clawhq.api.deps import LlmGateway

router = APIRouter(tags=["llm gateway"])


def is_llm(path: str) -> bool:
    """Whether the path is a model call (it has its own body limit, not the API's)."""
    return path.startswith("/llm/")


RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "a model call whose body is not one JSON object with each key once"},
    401: {"description": "unknown or revoked LLM token (in the provider's error format)"},
    403: {
        "description": "the plan does not include bundled keys, another provider, or a "
        "provider-side tool, background answer or content by URL the policy refuses"
    },
    404: {"description": "unknown provider, or a path the gateway does not relay"},
    413: {"description": "request body over CLAWHQ_LLM_MAX_BODY"},
    429: {"description": "over a per-minute limit or the monthly budget"},
    502: {"description": "the provider cannot be reached"},
    504: {"description": "the provider did not answer within CLAWHQ_LLM_TIMEOUT"},
}


@router.get("/llm/{provider}/{path:path}", operation_id="llm_get", responses=RESPONSES)
@router.post("/llm/{provider}/{path:path}", operation_id="llm_post", responses=RESPONSES)
async def llm_call(provider: str, path: str, request: Request, gateway: LlmGateway) -> Response:
    """The provider's own API, with the real key added and every token metered. The answer
    (streamed or not) is the provider's, passed through as it comes."""
    return await gateway.handle(request, provider, f"/{path}")
