"""What the LLM gateway relays at all, pure: the paths per provider (model calls, token counts,
model listings; nothing else), and the headers and query parameters that reach the provider."""

from __future__ import annotations

import pytest

from clawhq.errors import LlmRefused
from clawhq.llm import paths
from clawhq.llm.metering import Wire
from clawhq.llm.relay import passed_betas, upstream_headers, upstream_query

A, CHAT, RESP, GEM = Wire.ANTHROPIC, Wire.OPENAI_CHAT, Wire.OPENAI_RESPONSES, Wire.GEMINI

RELAYED = [
    ("anthropic", "GET", "/v1/models", None),
    ("anthropic", "GET", "/v1/models/claude-sonnet-4-6", None),
    ("anthropic", "POST", "/v1/messages", A),
    ("anthropic", "POST", "/v1/messages/count_tokens", None),
    ("openai", "GET", "/v1/models", None),
    ("openai", "GET", "/v1/models/ft:gpt-4o:org:x:1", None),
    ("openai", "POST", "/v1/responses", RESP),
    ("openai", "POST", "/v1/chat/completions", CHAT),
    ("google", "GET", "/v1beta/models", None),
    ("google", "GET", "/v1beta/models/gemini-2.5-pro", None),
    ("google", "GET", "/v1beta/openai/models", None),
    ("google", "POST", "/v1beta/models/gemini-2.5-pro:streamGenerateContent", GEM),
    ("google", "POST", "/v1beta/models/gemini-2.5-pro:countTokens", None),
    ("google", "POST", "/v1beta/openai/chat/completions", CHAT),
    ("deepseek", "GET", "/models", None),
    ("deepseek", "POST", "/chat/completions", CHAT),
    ("xai", "GET", "/v1/models", None),
    ("xai", "POST", "/v1/responses", RESP),
]
NOT_RELAYED = [
    ("openai", "GET", "/v1/chat/completions"),  # the stored chat completions of the key
    ("openai", "GET", "/v1/chat/completions/chatcmpl-1/messages"),
    ("openai", "GET", "/v1/responses/resp_1"),  # a stored or background response
    ("openai", "GET", "/v1/responses/resp_1/input_items"),
    ("openai", "GET", "/v1/files"),
    ("openai", "GET", "/v1/batches"),
    ("openai", "GET", "/v1/vector_stores"),
    ("openai", "GET", "/v1/organization/costs"),
    ("openai", "GET", "/models"),
    ("anthropic", "GET", "/v1/messages"),
    ("anthropic", "GET", "/v1/messages/batches"),
    ("anthropic", "GET", "/v1/files"),
    ("anthropic", "GET", "/v1/organizations/me"),
    ("google", "GET", "/v1beta/cachedContents"),
    ("google", "GET", "/v1beta/files"),
    ("google", "GET", "/v1beta/batches/b1"),
    ("google", "GET", "/v1beta/tunedModels"),
    ("deepseek", "GET", "/user/balance"),
    ("xai", "GET", "/v1/api-key"),
    ("xai", "GET", "/v1/chat/deferred-completion/r1"),
]
NOT_SERVED = [
    ("openai", "POST", "/v1/batches"),
    ("openai", "POST", "/v1/files"),
    ("openai", "POST", "/v1/uploads"),
    ("openai", "POST", "/v1/embeddings"),
    ("openai", "POST", "/v1/responses/resp_1/cancel"),
    ("openai", "POST", "/v1/responses/compact"),
    ("openai", "POST", "/v1/conversations"),
    ("openai", "POST", "/v1/vector_stores"),
    ("openai", "POST", "/v1/models"),
    ("anthropic", "POST", "/v1/messages/batches"),
    ("anthropic", "POST", "/v1/files"),
    ("google", "POST", "/v1beta/models/gemini-2.5-pro:batchGenerateContent"),
    ("google", "POST", "/v1beta/cachedContents"),
    ("google", "POST", "/upload/v1beta/files"),
    ("google", "POST", "/v1beta/models/gemini-2.5-pro:embedContent"),
    ("xai", "POST", "/v1/messages/batches"),
]


@pytest.mark.parametrize(("provider", "method", "path", "wire"), RELAYED)
def test_model_calls_token_counts_and_listings_are_relayed(
    provider: str, method: str, path: str, wire: Wire | None
) -> None:
    assert paths.relayed(provider, method, path) is wire


@pytest.mark.parametrize(("provider", "method", "path"), NOT_RELAYED + NOT_SERVED)
def test_every_other_path_is_refused(provider: str, method: str, path: str) -> None:
    with pytest.raises(LlmRefused) as caught:
        paths.relayed(provider, method, path)
    code = "llm_path_not_relayed" if method == "GET" else "llm_path_not_served"
    assert (caught.value.status, caught.value.code) == (404, code)


# -- headers and query -------------------------------------------------------------------------


def test_only_the_headers_a_call_needs_reach_the_provider() -> None:
    incoming = [
        ("Content-Type", "application/json"),
        ("Accept", "text/event-stream"),
        ("User-Agent", "OpenAI/Python 2.0"),
        ("anthropic-version", "2023-06-01"),
        ("X-Stainless-Retry-Count", "0"),
        ("x-goog-api-client", "google-genai-sdk/1.0"),
        ("OpenAI-Organization", "org-other"),
        ("OpenAI-Project", "proj_other"),
        ("OpenAI-Beta", "assistants=v2"),
        ("x-goog-user-project", "someone-elses-project"),
        ("X-Goog-FieldMask", "candidates"),
        ("anthropic-workspace-id", "wrkspc_1"),
        ("Helicone-Auth", "Bearer sk-helicone"),
        ("Cookie", "a=b"),
        ("Authorization", "Bearer chqllm_token"),
        ("x-api-key", "chqllm_token"),
        ("X-Forwarded-For", "10.0.0.1"),
        ("X-ClawHQ-Anything", "1"),
        ("Host", "evil.example"),
        ("Accept-Encoding", "gzip"),
    ]
    out = upstream_headers(incoming, [("x-api-key", "sk-real")])
    assert out == [
        ("Content-Type", "application/json"),
        ("Accept", "text/event-stream"),
        ("User-Agent", "OpenAI/Python 2.0"),
        ("anthropic-version", "2023-06-01"),
        ("X-Stainless-Retry-Count", "0"),
        ("x-goog-api-client", "google-genai-sdk/1.0"),
        ("x-api-key", "sk-real"),
        ("accept-encoding", "identity"),
    ]


def test_anthropic_betas_are_filtered_to_those_adding_no_provider_side_tool() -> None:
    asked = (
        "fine-grained-tool-streaming-2025-05-14, interleaved-thinking-2025-05-14,"
        "mcp-client-2025-11-20,code-execution-2025-08-25,files-api-2025-04-14,"
        "message-batches-2024-09-24,skills-2025-10-02,oauth-2025-04-20,web-fetch-2025-09-10,"
        "brand-new-thing-2031-01-01,context-1m-2025-08-07,no-date"
    )
    plain = "fine-grained-tool-streaming-2025-05-14,interleaved-thinking-2025-05-14"
    assert passed_betas(asked, egress_open=False) == f"{plain},context-1m-2025-08-07"
    assert passed_betas(asked, egress_open=True) == (
        f"{plain},mcp-client-2025-11-20,web-fetch-2025-09-10,context-1m-2025-08-07"
    )
    headers = upstream_headers([("anthropic-beta", "skills-2025-10-02")], [])
    assert ("anthropic-beta", "skills-2025-10-02") not in headers
    assert not any(name == "anthropic-beta" for name, _ in headers)  # none left: none sent


def test_only_the_query_parameters_a_call_needs_reach_the_provider() -> None:
    query = [
        ("alt", "sse"),
        ("key", "chqllm_token"),
        ("beta", "true"),
        ("fields", "candidates"),
        ("$fields", "candidates"),
        ("userProject", "p"),
        ("quotaUser", "q"),
        ("pageSize", "10"),
    ]
    assert upstream_query(query) == [("alt", "sse"), ("beta", "true"), ("pageSize", "10")]
