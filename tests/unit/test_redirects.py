"""``next`` after signing in is judged the way a browser reads a URL."""

from __future__ import annotations

import pytest

from clawhq.api.redirects import local_path


@pytest.mark.parametrize(
    "value",
    [
        "/\t/evil.example",
        "/\n/evil.example",
        "/\r\n/evil.example/x",
        "/\\evil.example",
        "\\\\evil.example",
        "//evil.example",
        " //evil.example",
        "\x01//evil.example",
        "https:evil.example",
        "https://evil.example",
        "javascript:alert(1)",
        "evil.example",
        "",
        None,
    ],
)
def test_anything_a_browser_would_take_off_the_origin_is_refused(value: str | None) -> None:
    assert local_path(value) == "/"


@pytest.mark.parametrize(
    ("value", "read"),
    [
        ("/ui/agents/abc", "/ui/agents/abc"),
        ("/agents/abc/?session=main", "/agents/abc/?session=main"),
        ("/a\tb", "/ab"),  # what the browser would ask for anyway
    ],
)
def test_a_path_on_the_origin_is_kept_as_the_browser_reads_it(value: str, read: str) -> None:
    assert local_path(value) == read
