"""Credentials at rest: sealed with keys derived from the master keys of a key ring (schema.keyring).

Fernet (AES-128-CBC with HMAC-SHA256) authenticates what it decrypts, so a wrong key or a tampered column is
an error, never garbage. Each purpose (account passwords, webhook secrets) gets its own key, derived with HKDF
from the master key and the purpose's label, so the master itself never touches the cipher and a key that opens
one kind of secret opens no other.

A sealed value names the master key that sealed it: ``iqk<ID>.<fernet token>``. The newest key of the ring
seals; every key of the ring opens. So a rotation (`inboxql secret rotate`) adds a key, re-seals what is stored,
and a process started before it keeps working: it re-reads the ring file when it meets a key id it does not hold
(and before it seals, so it seals with the newest key too).

Values sealed before key ids existed carry no tag: they open with the legacy derivation (no purpose) of any key
of the ring, and a rotation re-seals them in the tagged form.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from schema import keyring
from schema.keyring import Key

_TAGGED = re.compile(rb"iqk(\d{1,9})\.")
_LEGACY_INFO = b"inboxql credentials v1"


class CredentialError(Exception):
    """A stored credential could not be decrypted with the keys of this process."""


class Purpose(StrEnum):
    """What a sealed value is; each purpose derives a key of its own."""

    ACCOUNT = "account credentials"  # IMAP and SMTP passwords
    WEBHOOK = "webhook secrets"


def _fernet(secret: str, info: bytes) -> Fernet:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret.encode())
    return Fernet(base64.urlsafe_b64encode(derived))


class KeyRing:
    """The master keys of a process: one given key (INBOXQL_SECRET_KEY, key 1), or a ring file that is read
    again when it changes."""

    def __init__(self, keys: Sequence[Key], path: Path | None = None) -> None:
        if not keys or any(not k.secret for k in keys):
            raise ValueError("a secret key is required to encrypt credentials")
        self.keys = {k.id: k for k in keys}
        self.path = path
        self._stamp = self._stat()

    @classmethod
    def single(cls, secret: str) -> KeyRing:
        if not secret:
            raise ValueError("a secret key is required to encrypt credentials")
        return cls([Key(1, secret)])

    @classmethod
    def load(cls, path: Path) -> KeyRing:
        return cls(keyring.read(path), path)

    @property
    def newest(self) -> Key:
        return self.keys[max(self.keys)]

    def _stat(self) -> tuple[int, int, int] | None:
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def refresh(self) -> bool:
        """Read the ring file again if it changed (a rotation replaced it); True when it did."""
        stamp = self._stat()
        if self.path is None or stamp is None or stamp == self._stamp:
            return False
        keys = keyring.read(self.path)
        self.keys = {k.id: k for k in keys}
        self._stamp = stamp
        return True


class CredentialBox:
    def __init__(self, keys: KeyRing | str) -> None:
        self.ring = keys if isinstance(keys, KeyRing) else KeyRing.single(keys)
        self._fernets: dict[tuple[str, bytes], Fernet] = {}

    def _cipher(self, key: Key, info: bytes) -> Fernet:
        cached = self._fernets.get((key.secret, info))
        if cached is None:
            cached = self._fernets[(key.secret, info)] = _fernet(key.secret, info)
        return cached

    @staticmethod
    def _info(purpose: Purpose) -> bytes:
        return b"inboxql v2: " + purpose.value.encode()

    def seal(self, plaintext: str, purpose: Purpose) -> bytes:
        self.ring.refresh()
        key = self.ring.newest
        return b"iqk%d." % key.id + self._cipher(key, self._info(purpose)).encrypt(plaintext.encode())

    @staticmethod
    def key_id(sealed: bytes) -> int | None:
        """The id of the master key that sealed this (None: sealed before key ids existed)."""
        tagged = _TAGGED.match(sealed)
        return int(tagged.group(1)) if tagged else None

    def is_current(self, sealed: bytes) -> bool:
        """Whether this is sealed with the newest key (a rotation re-seals the others)."""
        return self.key_id(sealed) == self.ring.newest.id

    def open(self, sealed: bytes, purpose: Purpose) -> str:
        tagged = _TAGGED.match(sealed)
        try:
            if tagged is None:
                return self._open_legacy(sealed)
            key_id = int(tagged.group(1))
            key = self.ring.keys.get(key_id)
            if key is None and self.ring.refresh():
                key = self.ring.keys.get(key_id)
            if key is None:
                raise CredentialError(f"stored credentials are sealed with key {key_id}, which this key ring lacks")
            return self._cipher(key, self._info(purpose)).decrypt(sealed[tagged.end() :]).decode()
        except InvalidToken as exc:
            raise CredentialError("stored credentials do not decrypt with this process's secret key") from exc

    def _open_legacy(self, sealed: bytes) -> str:
        for key in sorted(self.ring.keys.values(), key=lambda k: k.id):
            try:
                return self._cipher(key, _LEGACY_INFO).decrypt(sealed).decode()
            except InvalidToken:
                continue
        raise InvalidToken


__all__ = ["CredentialBox", "CredentialError", "KeyRing", "Purpose"]
