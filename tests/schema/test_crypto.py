"""Credentials at rest: sealed with a key derived from the secret key, authenticated on opening."""

from __future__ import annotations

import pytest

from schema.crypto import CredentialBox, CredentialError


def test_sealed_credentials_do_not_contain_the_plaintext() -> None:
    password = "correct horse battery staple"
    sealed = CredentialBox("a secret key").seal(password)
    assert isinstance(sealed, bytes)
    assert password.encode() not in sealed
    assert sealed != password.encode()


def test_sealing_twice_gives_different_ciphertexts() -> None:
    box = CredentialBox("a secret key")
    assert box.seal("hunter2") != box.seal("hunter2")


@pytest.mark.parametrize("password", ["hunter2", "", "pässwörd ✓ 密码", "x" * 500])
def test_open_round_trips_what_seal_sealed(password: str) -> None:
    box = CredentialBox("a secret key")
    assert box.open(box.seal(password)) == password


def test_a_box_with_the_same_secret_key_opens_it() -> None:
    sealed = CredentialBox("the key").seal("hunter2")
    assert CredentialBox("the key").open(sealed) == "hunter2"


def test_a_different_secret_key_raises_credential_error() -> None:
    sealed = CredentialBox("the right key").seal("hunter2")
    with pytest.raises(CredentialError):
        CredentialBox("the wrong key").open(sealed)


def test_a_tampered_credential_raises_credential_error() -> None:
    box = CredentialBox("the key")
    sealed = bytearray(box.seal("hunter2"))
    sealed[-5] ^= 0x01
    with pytest.raises(CredentialError):
        box.open(bytes(sealed))


def test_an_empty_secret_key_is_refused() -> None:
    with pytest.raises(ValueError, match="secret key"):
        CredentialBox("")
