"""The owner's access to their agent's own origin: a short-lived cookie of that origin alone,
sealed with ClawHQ's key ring and bound to the agent (it opens nothing on another origin)."""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable

from clawhq.crypto import DecryptionError, Keyring, Sealed

#: Starts with ClawHQ's prefix, so the proxy never forwards it to the agent.
TICKET_COOKIE = "clawhq_agent_access"
TICKET_SECONDS = 3600


class Tickets:
    def __init__(
        self,
        keyring: Keyring,
        seconds: int = TICKET_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keyring = keyring
        self.seconds = seconds
        self._clock = clock

    def issue(self, agent_id: str, user_id: str) -> str:
        expires = int(self._clock()) + self.seconds
        sealed = self._keyring.seal(f"{user_id}:{expires}", _context(agent_id))
        raw = sealed.key_id.encode() + b"." + sealed.ciphertext
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def user_of(self, value: str | None, agent_id: str) -> str | None:
        """The user a ticket of this agent's origin was issued to, while it lasts."""
        if not value or len(value) > 512:
            return None
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            key_id, _, ciphertext = raw.partition(b".")
            opened = self._keyring.open(Sealed(ciphertext, key_id.decode()), _context(agent_id))
        except (binascii.Error, UnicodeDecodeError, ValueError, DecryptionError):
            return None
        user_id, _, expires = opened.rpartition(":")
        if not user_id or not expires.isdigit() or int(expires) < self._clock():
            return None
        return user_id


def _context(agent_id: str) -> str:
    return f"agent-access:{agent_id}"
