"""Passwords (argon2) and bearer tokens (random, stored as SHA-256 digests)."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

API_TOKEN_PREFIX = "chq_"
WEBHOOK_TOKEN_PREFIX = "whk_"
#: An agent container's token for ClawHQ's LLM gateway (it never holds a provider key).
LLM_TOKEN_PREFIX = "chqllm_"
#: The longest LLM token :func:`new_token` makes: the prefix, then 32 bytes in URL-safe base64.
LLM_TOKEN_MAX = len(LLM_TOKEN_PREFIX) + 43

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def new_token(prefix: str) -> str:
    """A new bearer token: a readable prefix and 256 random bits."""
    return prefix + secrets.token_urlsafe(32)


def is_llm_token(token: str) -> bool:
    """Whether ``token`` may be an LLM token :func:`new_token` made (others are not looked up)."""
    return token.startswith(LLM_TOKEN_PREFIX) and len(token) <= LLM_TOKEN_MAX


def hash_token(token: str) -> str:
    """The digest under which a token is stored and looked up.

    Tokens carry 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    """
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(token: str, digest: str) -> bool:
    return hmac.compare_digest(hash_token(token), digest)
