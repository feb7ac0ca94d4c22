"""Every agent on a browser origin of its own, and the paths that stay inside it. Pure.

An agent's pages run whatever its gateway serves, and its gateway runs whatever its model
says: on ClawHQ's own origin such a page could register a service worker over ClawHQ's pages,
read ClawHQ's responses or clear its cookies. So each agent is served on the origin
``CLAWHQ_AGENT_ORIGIN`` makes for it (``https://{agent}.agents.example.com``); ClawHQ's session
cookie, which is host-only, never goes there.
"""

from __future__ import annotations

import posixpath
import re
from urllib.parse import quote, unquote, urlsplit

#: What an agent's label in a host may be (agent ids are lowercase hex).
_LABEL = re.compile(r"^[a-z0-9]{1,64}$")
#: Path characters forwarded as they are (RFC 3986 pchar, and "/").
_SAFE = "/:@!$&'()*+,;=-._~"


class AgentOrigins:
    """The agents' origins, from a template with ``{agent}`` in its host."""

    def __init__(self, template: str) -> None:
        parts = urlsplit(template.replace("{agent}", "agent-placeholder"))
        self.scheme = parts.scheme
        host = (parts.hostname or "").replace("agent-placeholder", "{agent}")
        self._prefix, _, self._suffix = host.partition("{agent}")
        self._template = template

    def origin(self, agent_id: str) -> str:
        return self._template.replace("{agent}", agent_id.lower())

    def agent_of(self, host_header: str | None) -> str | None:
        """The agent whose origin a request's ``Host`` names, if it names one (the port is
        not compared: a reverse proxy in front may serve the origin on another)."""
        if not host_header:
            return None
        host = host_header.strip().lower()
        if host.startswith("["):
            return None  # an IPv6 literal is never an agent's origin
        host = host.rsplit(":", 1)[0] if ":" in host else host
        if not (host.startswith(self._prefix) and host.endswith(self._suffix)):
            return None
        label = host[len(self._prefix) : len(host) - len(self._suffix)]
        return label if _LABEL.match(label) else None


def normal_path(raw: str) -> str:
    """The path as a server may come to read it: percent-decoded (once more if decoding made
    new escapes), backslashes as slashes (browsers' reading), dot segments resolved."""
    path = raw
    for _ in range(3):  # %252e%252e -> %2e%2e -> ..
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    path = path.replace("\\", "/")
    normal = posixpath.normpath("/" + path.lstrip("/"))
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    if path.endswith("/") and normal != "/":
        normal += "/"
    return normal


def within(path: str, base: str) -> bool:
    """Whether a normal path is ``base`` or below it."""
    return path == base or path.startswith(base.rstrip("/") + "/")


def forwardable(path: str) -> str:
    """A normal path, escaped again for the request line."""
    return quote(path, safe=_SAFE)
