"""ClawHQ's exceptions. Every error a user can see has a stable ``code`` and an HTTP status.

    ClawHQError
    ├── ConfigError                 invalid settings; stops start-up (never an HTTP answer)
    ├── FirewallError               host firewall rules cannot be read or installed (CLI only)
    ├── InvalidRequest (400)        well-formed but unacceptable input
    │   └── ArchiveInvalid          an uploaded workspace archive is malformed or unsafe
    ├── Unauthorized (401)          missing, wrong or expired credentials
    ├── Forbidden (403)
    │   └── PlanLimitExceeded       the user's plan does not allow this
    ├── NotFound (404)              unknown, or owned by someone else
    │   └── BackupNotFound          no stored backup under that key
    ├── Conflict (409)              the resource's state does not allow this now
    │   └── BackupCorrupt           a stored backup fails its checks (tampered, truncated,
    │                               or sealed by a key the key ring no longer holds)
    ├── AgentNotRunning (409, 503)  the agent's gateway cannot take traffic now
    ├── AgentTimeout (504)          the agent's gateway took too long to start answering
    ├── PayloadTooLarge (413)       a request body over the limit
    │   └── ArchiveTooLarge         an uploaded archive over a size or member-count cap
    ├── TooManyRequests (429)       come back later (``retry_after`` seconds)
    ├── EngineError (502)           the container engine refused or failed an operation
    │   └── ImageNotFound           the agent image is not on the engine
    ├── Unavailable (503)           a dependency is down or a pool is empty
    │   ├── DatabaseUnavailable     the database cannot be reached (reads on the API's loop)
    │   ├── EngineUnavailable       the container engine cannot be reached
    │   ├── BackupStoreUnavailable  the backup store (directory or S3 bucket) failed
    │   └── PortPoolExhausted       no free port is left in CLAWHQ_PORT_RANGE
    ├── LlmRefused (its own status) the LLM gateway will not make a call (``kind``, ``code``)
    └── EgressRefused (own status)  the egress proxy will not connect (code ``egress_<reason>``)

The runtime package translates Docker SDK errors into these at its boundary. Each wire formats
them its own way: the API as ``application/problem+json``, the LLM gateway as the provider's
own error body (llm/providers.py), the egress proxy as a status line and ``X-ClawHQ-Error``.
"""

from __future__ import annotations


class ClawHQError(Exception):
    """Base of every ClawHQ error: a stable machine ``code`` and a human ``message``."""

    status: int = 500
    code: str = "internal_error"
    #: Seconds after which trying again makes sense (a ``Retry-After`` header), if any.
    retry_after: int | None = None

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        #: Extra members of the problem document (``status`` of an agent, say).
        self.details: dict[str, str] = {}


class ConfigError(ClawHQError):
    code = "config_error"


class FirewallError(ClawHQError):
    code = "firewall_error"


class InvalidRequest(ClawHQError):
    status = 400
    code = "invalid_request"


class Unauthorized(ClawHQError):
    status = 401
    code = "unauthorized"


class Forbidden(ClawHQError):
    status = 403
    code = "forbidden"


class PlanLimitExceeded(Forbidden):
    code = "plan_limit_exceeded"


class NotFound(ClawHQError):
    status = 404
    code = "not_found"


class Conflict(ClawHQError):
    status = 409
    code = "conflict"


class TooManyRequests(ClawHQError):
    status = 429
    code = "too_many_requests"

    def __init__(self, message: str, *, code: str | None = None, retry_after: int = 5) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class AgentNotRunning(ClawHQError):
    """The agent's gateway cannot take traffic now: 503 while it is on its way up (or down),
    409 when it is not meant to run (stopped, failed)."""

    code = "agent_not_running"

    def __init__(self, message: str, *, agent_status: str, transient: bool) -> None:
        super().__init__(message)
        self.status = 503 if transient else 409
        self.retry_after = 5 if transient else None
        self.details = {"agentStatus": agent_status}


class AgentTimeout(ClawHQError):
    """The agent's gateway took longer than ``CLAWHQ_PROXY_TIMEOUT`` to start answering."""

    status = 504
    code = "agent_timeout"


class PayloadTooLarge(ClawHQError):
    status = 413
    code = "payload_too_large"


class ArchiveInvalid(InvalidRequest):
    """An uploaded workspace archive is not a gzip tar, or holds what a workspace may not
    (links, devices, absolute or climbing paths, setuid bits); the message names the member."""

    code = "archive_invalid"


class ArchiveTooLarge(PayloadTooLarge):
    """An uploaded archive over the compressed, unpacked or member-count cap."""

    code = "archive_too_large"


class BackupNotFound(NotFound):
    code = "backup_not_found"


class BackupCorrupt(Conflict):
    """A stored backup fails authentication or its checksum. 409, not 422: the request is
    fine, the stored resource is not (docs/backups.md)."""

    code = "backup_corrupt"


class EngineError(ClawHQError):
    status = 502
    code = "engine_error"


class ImageNotFound(EngineError):
    code = "image_not_found"


class Unavailable(ClawHQError):
    status = 503
    code = "unavailable"


class DatabaseUnavailable(Unavailable):
    code = "database_unavailable"


class EngineUnavailable(Unavailable):
    code = "engine_unavailable"


class PortPoolExhausted(Unavailable):
    code = "port_pool_exhausted"


class BackupStoreUnavailable(Unavailable):
    code = "backup_store_unavailable"


class LlmRefused(ClawHQError):
    """The LLM gateway will not make this call; ``kind`` names the provider's error type."""

    def __init__(
        self, status: int, kind: str, code: str, message: str, retry_after: int | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.status, self.kind, self.retry_after = status, kind, retry_after


class EgressRefused(ClawHQError):
    """The egress proxy will not open this connection; ``reason`` ends its status line."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message, code=f"egress_{reason}")
        self.status, self.reason = status, reason
