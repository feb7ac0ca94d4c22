"""What crosses the proxy, header by header (pure functions)."""

from __future__ import annotations

from clawhq.proxy.headers import (
    UNATTRIBUTED_CLIENT,
    downstream_response_headers,
    forwarded_for,
    upstream_request_headers,
    without_clawhq_cookies,
)


def test_clawhqs_cookies_never_reach_the_agent() -> None:
    assert without_clawhq_cookies("a=1; clawhq_session=s; b=2; CLAWHQ_csrf=c") == "a=1; b=2"
    assert without_clawhq_cookies("clawhq_session=s") == ""


def test_the_proxy_writes_identity_and_forwarding_headers_itself() -> None:
    incoming = [
        ("Host", "hq.example.com"),
        ("Authorization", "Bearer chq_user_token"),
        ("X-ClawHQ-Identity", "forged"),
        ("X-Forwarded-For", "10.0.0.1"),
        ("Forwarded", "for=10.0.0.1"),
        ("X-Real-IP", "10.0.0.1"),
        ("Connection", "keep-alive, X-Secret-Hop"),
        ("X-Secret-Hop", "1"),
        ("Transfer-Encoding", "chunked"),
        ("Cookie", "clawhq_session=s"),
        ("Accept", "text/html"),
    ]
    out = upstream_request_headers(
        incoming, identity="id-1", client_address="198.51.100.7", proto="https", host="hq"
    )
    assert out == [
        ("accept", "text/html"),
        ("x-clawhq-identity", "id-1"),
        ("x-forwarded-for", "198.51.100.7"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "hq"),
    ]


def test_websocket_handshake_headers_are_left_to_the_client_library() -> None:
    incoming = [
        ("Sec-WebSocket-Key", "k"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Protocol", "p"),
        ("Origin", "http://hq"),
        ("Upgrade", "websocket"),
        ("User-Agent", "browser"),
    ]
    out = upstream_request_headers(
        incoming, identity="i", client_address="c", proto="http", host="h", websocket=True
    )
    assert [name for name, _ in out] == [
        "user-agent",
        "x-clawhq-identity",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
    ]


def test_the_agent_cannot_set_cookies_and_hop_by_hop_headers_stop_here() -> None:
    upstream = [
        ("Content-Type", "text/html"),
        ("Set-Cookie", "clawhq_session=planted; Path=/"),
        ("set-cookie", "other=1"),
        ("Connection", "close, X-Hop"),
        ("X-Hop", "1"),
        ("Keep-Alive", "timeout=5"),
        ("Content-Length", "12"),
    ]
    assert downstream_response_headers(upstream) == [
        ("Content-Type", "text/html"),
        ("Content-Length", "12"),
    ]


def test_clients_the_gateway_cannot_attribute_are_forwarded_as_a_documentation_address() -> None:
    assert forwarded_for("203.0.113.5") == "203.0.113.5"
    assert forwarded_for("2001:db8::1") == "2001:db8::1"
    for unattributable in ("127.0.0.1", "::1", "testclient", "", "0.0.0.0"):
        assert forwarded_for(unattributable) == UNATTRIBUTED_CLIENT
    assert forwarded_for("172.18.0.1", proxy_address="172.18.0.1") == UNATTRIBUTED_CLIENT
