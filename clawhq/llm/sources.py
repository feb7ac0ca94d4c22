"""Content of a model call that the provider would fetch from a URL the agent names. Pure.

Besides tools, the providers fetch images and documents given by URL (an Anthropic ``image`` or
``document`` with a ``url`` source, an OpenAI ``image_url`` or ``input_file.file_url``, a
Gemini ``fileData.fileUri`` over http): a request the provider makes for the agent, past its
egress firewall, whose URL can carry what the agent wants out. For agents whose egress is not
``open`` such content is refused; inline data (base64, ``data:`` URLs) is not fetched and
passes. Only where the APIs take input is looked at: citations and search results replayed
from earlier answers name URLs that nothing fetches.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from clawhq.llm.wires import Wire

_FETCHED_SCHEMES = ("http://", "https://")


def fetched_url(wire: Wire, body: dict[str, Any]) -> str | None:
    """What in ``body`` the provider would fetch from a URL (``"an image by URL"``…), or None."""
    finder = {
        Wire.ANTHROPIC: _anthropic,
        Wire.OPENAI_CHAT: _chat,
        Wire.OPENAI_RESPONSES: _responses,
        Wire.GEMINI: _gemini,
    }[wire]
    return next(finder(body), None)


def _items(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _remote(url: object) -> bool:
    return isinstance(url, str) and url.strip().lower().startswith(_FETCHED_SCHEMES)


def _anthropic(body: dict[str, Any]) -> Iterator[str]:
    for message in _items(body.get("messages")):
        for block in _items(_dict(message).get("content")):
            block = _dict(block)
            inner = [block, *map(_dict, _items(block.get("content")))]  # a tool_result's
            for each in inner:
                if _dict(each.get("source")).get("type") == "url":
                    yield f"a{'n' if each.get('type') == 'image' else ''} {each.get('type')} by URL"


def _chat(body: dict[str, Any]) -> Iterator[str]:
    for message in _items(body.get("messages")):
        for part in _items(_dict(message).get("content")):
            part = _dict(part)
            if part.get("type") == "image_url":
                image = part.get("image_url")
                if _remote(_dict(image).get("url") if isinstance(image, dict) else image):
                    yield "an image by URL"


def _responses(body: dict[str, Any]) -> Iterator[str]:
    for item in _items(body.get("input")):
        item = _dict(item)
        for part in [*_items(item.get("content")), *_items(item.get("output"))]:
            part = _dict(part)
            if part.get("type") == "input_image" and _remote(part.get("image_url")):
                yield "an image by URL"
            if part.get("type") == "input_file" and part.get("file_url"):
                yield "a file by URL"


def _gemini(body: dict[str, Any]) -> Iterator[str]:
    instruction = body.get("systemInstruction", body.get("system_instruction"))
    for content in [*_items(body.get("contents")), _dict(instruction)]:
        for part in _items(_dict(content).get("parts")):
            part = _dict(part)
            data = _dict(part.get("fileData", part.get("file_data")))
            if _remote(data.get("fileUri", data.get("file_uri"))):
                yield "a file by URL"
