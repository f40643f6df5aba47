"""Credentials at rest: encrypted with a key derived from the process's secret key.

Fernet (AES-128-CBC with HMAC-SHA256) authenticates what it decrypts, so a wrong key or a tampered column is
an error, never garbage. The key is derived with HKDF so the secret itself never touches the cipher.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class CredentialError(Exception):
    """A stored credential could not be decrypted with this secret key."""


class CredentialBox:
    def __init__(self, secret_key: str) -> None:
        if not secret_key:
            raise ValueError("a secret key is required to encrypt credentials")
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"inboxql credentials v1").derive(
            secret_key.encode()
        )
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def seal(self, plaintext: str) -> bytes:
        return self._fernet.encrypt(plaintext.encode())

    def open(self, sealed: bytes) -> str:
        try:
            return self._fernet.decrypt(sealed).decode()
        except InvalidToken as exc:
            raise CredentialError("stored credentials do not decrypt with INBOXQL_SECRET_KEY") from exc
