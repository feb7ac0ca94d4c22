"""Encryption of users' secrets at rest (AES-256-GCM) and the key that protects them.

Each ciphertext is bound to its context (for example ``agent:<id>:api_key``) as GCM
associated data, so a ciphertext copied to another row fails to decrypt. Each row also stores
the id of the key that sealed it, so keys can be rotated later.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from clawhq.errors import ClawHQError, ConfigError
from clawhq.setting_values import decode_encryption_key
from clawhq.settings import Settings

log = logging.getLogger(__name__)

NONCE_BYTES = 12
DEV_KEY_FILE = "encryption.key"


class DecryptionError(ClawHQError):
    code = "decryption_failed"


def generate_key() -> str:
    """A new url-safe base64 key of 32 random bytes, for ``CLAWHQ_ENCRYPTION_KEY``."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def key_id(raw_key: bytes) -> str:
    """A short public fingerprint of a key, stored next to each ciphertext."""
    return hashlib.sha256(b"clawhq-key-id:" + raw_key).hexdigest()[:16]


@dataclass(frozen=True)
class Sealed:
    """A ciphertext (nonce + GCM output) and the id of the key that sealed it."""

    ciphertext: bytes
    key_id: str


class Keyring:
    """Seals with the current key; opens with any key it holds (old keys stay readable)."""

    def __init__(self, current: bytes, older: tuple[bytes, ...] = ()) -> None:
        self._current_id = key_id(current)
        self._keys = {key_id(k): AESGCM(k) for k in (current, *older)}

    @property
    def current_key_id(self) -> str:
        return self._current_id

    def reseal(self, sealed: Sealed, context: str) -> Sealed:
        """The same secret sealed under the current key (as is when it already is)."""
        if sealed.key_id == self._current_id:
            return sealed
        return self.seal(self.open(sealed, context), context)

    def seal(self, plaintext: str, context: str) -> Sealed:
        nonce = secrets.token_bytes(NONCE_BYTES)
        body = self._keys[self._current_id].encrypt(nonce, plaintext.encode(), context.encode())
        return Sealed(nonce + body, self._current_id)

    def open(self, sealed: Sealed, context: str) -> str:
        aead = self._keys.get(sealed.key_id)
        if aead is None:
            raise DecryptionError(f"no key with id {sealed.key_id} is configured")
        nonce, body = sealed.ciphertext[:NONCE_BYTES], sealed.ciphertext[NONCE_BYTES:]
        try:
            return aead.decrypt(nonce, body, context.encode()).decode()
        except InvalidTag:
            raise DecryptionError("ciphertext does not belong to this context or key") from None


def load_keyring(settings: Settings) -> Keyring:
    """The keyring from ``CLAWHQ_ENCRYPTION_KEY``.

    In development without a key, a key is generated once and kept in the data dir (mode 0600),
    with a loud warning: losing that file makes every stored secret unreadable.
    """
    older = tuple(decode_encryption_key(k.get_secret_value()) for k in settings.encryption_keys_old)
    if settings.encryption_key is not None:
        return Keyring(decode_encryption_key(settings.encryption_key.get_secret_value()), older)
    if settings.env == "production":  # settings validation already refuses this
        raise ConfigError("CLAWHQ_ENCRYPTION_KEY is required in production")
    path = settings.data_dir / DEV_KEY_FILE
    if path.exists():
        raw = decode_encryption_key(path.read_text().strip())
        log.warning(
            "CLAWHQ_ENCRYPTION_KEY is not set: using the development key in %s. "
            "Set CLAWHQ_ENCRYPTION_KEY (and CLAWHQ_ENV=production) for real use.",
            path,
        )
        return Keyring(raw, older)
    path.parent.mkdir(parents=True, exist_ok=True)
    encoded = generate_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(encoded + "\n")
    log.warning(
        "CLAWHQ_ENCRYPTION_KEY is not set: GENERATED a development key and wrote it to %s. "
        "Back it up or set CLAWHQ_ENCRYPTION_KEY; without it stored API keys cannot be read.",
        path,
    )
    return Keyring(decode_encryption_key(encoded), older)
