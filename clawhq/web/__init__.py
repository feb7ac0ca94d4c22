"""The dashboard: ClawHQ's web pages for users and operators, served by ClawHQ itself.

Server-rendered Jinja2 templates, htmx (vendored from npm: ``vendor/``) for the parts that
load or change in place, and Server-Sent Events for what changes while a page is open. The
sign-in page (anonymous) or the caller's agents are at ``/``; everything else is under
``/ui/``. Page handlers call the API's own route functions and schemas (same checks, same
audit, same messages), never ClawHQ over HTTP. ``clawhq.api`` only includes :data:`router`.
"""

from __future__ import annotations

from fastapi import APIRouter

from clawhq.web import account, admin, agents, live, operations, panels, signin, static_route

router = APIRouter(include_in_schema=False)
for _module in (static_route, signin, agents, panels, live, account, admin, operations):
    router.include_router(_module.router)

__all__ = ["router"]
