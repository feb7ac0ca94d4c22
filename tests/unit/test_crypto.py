from __future__ import annotations

import base64

import pytest

from clawhq.crypto import DecryptionError, Keyring, Sealed, generate_key, key_id, load_keyring
from clawhq.setting_values import decode_encryption_key
from clawhq.settings import load_settings


def ring() -> Keyring:
    return Keyring(decode_encryption_key(generate_key()))


def test_round_trip_and_ciphertext_is_not_plaintext() -> None:
    keyring = ring()
    sealed = keyring.seal("sk-ant-secret-value", "agent:a1:api_key")
    assert b"sk-ant-secret-value" not in sealed.ciphertext
    assert sealed.key_id == keyring.current_key_id
    assert keyring.open(sealed, "agent:a1:api_key") == "sk-ant-secret-value"


def test_nonces_differ_between_seals() -> None:
    keyring = ring()
    assert keyring.seal("x", "c").ciphertext != keyring.seal("x", "c").ciphertext


def test_ciphertext_moved_to_another_agent_does_not_open() -> None:
    keyring = ring()
    sealed = keyring.seal("sk-secret", "agent:a1:api_key")
    with pytest.raises(DecryptionError):
        keyring.open(sealed, "agent:a2:api_key")


def test_old_keys_still_open_after_rotation() -> None:
    old, new = decode_encryption_key(generate_key()), decode_encryption_key(generate_key())
    sealed = Keyring(old).seal("sk", "c")
    assert Keyring(new, (old,)).open(sealed, "c") == "sk"
    with pytest.raises(DecryptionError, match="no key"):
        Keyring(new).open(sealed, "c")
    assert key_id(old) != key_id(new)


def test_tampered_ciphertext_is_refused() -> None:
    keyring = ring()
    sealed = keyring.seal("sk", "c")
    flipped = bytes([sealed.ciphertext[0] ^ 1]) + sealed.ciphertext[1:]
    with pytest.raises(DecryptionError):
        keyring.open(Sealed(flipped, sealed.key_id), "c")


def test_generated_keys_are_32_urlsafe_bytes() -> None:
    assert len(base64.urlsafe_b64decode(generate_key())) == 32


def test_development_key_is_generated_once_and_kept(tmp_path, caplog) -> None:
    settings = load_settings(data_dir=tmp_path, encryption_key=None)
    first = load_keyring(settings)
    key_file = tmp_path / "encryption.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert "GENERATED a development key" in caplog.text
    assert load_keyring(settings).current_key_id == first.current_key_id
