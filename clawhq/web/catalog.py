"""What the new-agent form offers: providers with their names, and models to pick from.

Suggestions only: the model field takes any name the API's ``ModelName`` rule accepts (a
provider's newest model before this list knows it).
"""

from __future__ import annotations

from clawhq.settings import PROVIDERS

PROVIDER_NAMES = {
    "claude": "Anthropic Claude",
    "openai": "OpenAI",
    "gemini": "Google Gemini",
    "deepseek": "DeepSeek",
    "grok": "xAI Grok",
}
assert set(PROVIDER_NAMES) == set(PROVIDERS)

MODELS: dict[str, tuple[str, ...]] = {
    "claude": ("claude-sonnet-4-20250514", "claude-opus-4-1-20250805", "claude-3-5-haiku-latest"),
    "openai": ("gpt-5", "gpt-5-mini", "gpt-4.1"),
    "gemini": ("gemini-2.5-pro", "gemini-2.5-flash"),
    "deepseek": ("deepseek-chat", "deepseek-reasoner"),
    "grok": ("grok-4", "grok-3-mini"),
}
assert set(MODELS) == set(PROVIDERS)
