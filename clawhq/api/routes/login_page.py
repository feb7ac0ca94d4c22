"""``/login``: the smallest page that gives a browser a ClawHQ session (a cookie) and sends it
on to where it was going — an agent's Control UI, say. The dashboard will replace it."""

from __future__ import annotations

import base64
import hashlib
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["agent access"])

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:22rem;margin:4rem auto;padding:0 1rem}"
    "label,input,button{display:block;width:100%;margin:.3rem 0;font-size:1rem}"
    "input{padding:.4rem}#error{color:#b00020;min-height:1.2em}"
)
# ``next`` is only ever a path on this origin: "//host" or "/\\host" would leave it.
_SCRIPT = """
const form = document.getElementById("login");
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const error = document.getElementById("error");
  error.textContent = "";
  const body = JSON.stringify({
    email: form.email.value, password: form.password.value, cookie: true });
  const answer = await fetch("/api/auth/login", {
    method: "POST", headers: { "content-type": "application/json" }, body });
  if (!answer.ok) {
    const problem = await answer.json().catch(() => ({}));
    error.textContent = problem.detail || `login failed (${answer.status})`;
    return;
  }
  const next = new URLSearchParams(location.search).get("next") || "/api/auth/me";
  const local = next.startsWith("/") && !next.startsWith("//") && !next.startsWith("/\\\\");
  location.assign(local ? next : "/api/auth/me");
});
"""


def _digest(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


_PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ClawHQ: log in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{_STYLE}</style></head>
<body><h1>ClawHQ</h1>
<form id="login"><label>Email <input name="email" type="email" autocomplete="username" required>
</label><label>Password <input name="password" type="password" autocomplete="current-password"
required></label><button type="submit">Log in</button><p id="error" role="alert"></p></form>
<script>{_SCRIPT}</script></body></html>
"""
_POLICY = (
    f"default-src 'none'; script-src '{_digest(_SCRIPT)}'; style-src '{_digest(_STYLE)}'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
async def login_page(
    next: Annotated[str | None, Query(max_length=2048)] = None,
) -> HTMLResponse:
    """The login form; after logging in the browser goes on to ``next`` (a local path)."""
    return HTMLResponse(
        _PAGE,
        headers={
            "Content-Security-Policy": _POLICY,
            "Cache-Control": "no-store",
            "Referrer-Policy": "same-origin",
        },
    )
