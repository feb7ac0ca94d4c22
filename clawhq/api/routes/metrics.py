"""``GET /metrics`` for Prometheus.

Agents reach ClawHQ's port through their network's gateway (for webhooks), and the metrics
name users: so scrapes need ``Authorization: Bearer $CLAWHQ_METRICS_TOKEN`` when a token is
configured, and otherwise must come from this host's loopback. Behind trusted proxies
(``CLAWHQ_TRUSTED_PROXIES``) the token is required: a proxy on this host makes every request it
passes a loopback one, and one elsewhere could pass a forged ``X-Forwarded-For`` along.
"""

from __future__ import annotations

import hmac
from ipaddress import ip_address

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from clawhq.api.deps import BearerToken, Context, client_of
from clawhq.errors import Forbidden, Unauthorized

router = APIRouter(tags=["observability"])


@router.get("/metrics", response_class=Response, include_in_schema=False)
def metrics(request: Request, context: Context, credentials: BearerToken) -> Response:
    token = context.settings.metrics_token
    if token is not None:
        given = credentials.credentials if credentials else ""
        if not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
            raise Unauthorized("send CLAWHQ_METRICS_TOKEN as a bearer token", code="invalid_token")
    elif context.settings.trusted_proxies:
        raise Forbidden(
            "with CLAWHQ_TRUSTED_PROXIES set, metrics need CLAWHQ_METRICS_TOKEN: set it and "
            "scrape with it as a bearer token",
            code="metrics_token_required",
        )
    else:
        client = client_of(request)
        try:
            loopback = ip_address(client).is_loopback
        except ValueError:
            loopback = client == "testclient"
        if not loopback:
            raise Forbidden(
                "metrics are served to loopback only unless CLAWHQ_METRICS_TOKEN is set",
                code="metrics_forbidden",
            )
    return Response(generate_latest(context.metrics.registry), media_type=CONTENT_TYPE_LATEST)
