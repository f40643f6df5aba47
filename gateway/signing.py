"""Signed download links: a browser can follow an attachment URL without sending the bearer token.

A link names the object, the token it was made for and an expiry, and carries an HMAC of the three under
the process secret. Following it re-checks the token (not revoked, still covering the object's account), so
a link never outlives the access it was made under.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlencode


class Signer:
    def __init__(self, secret_key: str, lifetime_seconds: int) -> None:
        if not secret_key:
            raise ValueError("the gateway needs Settings.secret_key to sign download links")
        self._key = hashlib.sha256(b"inboxql-download:" + secret_key.encode()).digest()
        self.lifetime = lifetime_seconds

    def _mac(self, path: str, token_id: int, expires: int) -> str:
        message = f"{path}\n{token_id}\n{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:32]

    def sign(self, path: str, token_id: int, now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + self.lifetime)
        query = urlencode({"t": token_id, "e": expires, "s": self._mac(path, token_id, expires)})
        return f"{path}?{query}"

    def verify(self, path: str, token_id: int, expires: int, signature: str, now: float | None = None) -> bool:
        if expires < (time.time() if now is None else now):
            return False
        return hmac.compare_digest(self._mac(path, token_id, expires), signature)
