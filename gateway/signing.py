"""Signed download links: a browser can follow an attachment URL without sending the bearer token.

A link names the object, the token it was made for and an expiry, and carries an HMAC of the three under
the process secret. Following it re-checks the token (not revoked, still covering the object's account), so
a link never outlives the access it was made under.

The secret is the key ring's (schema.crypto): links are signed with the newest key and verified with any key of
the ring, so across a rotation (`inboxql secret rotate`) a link made by one gateway process is followed by another,
whether it started before the rotation or after.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlencode

from schema.crypto import KeyRing


def _mac(secret: str, path: str, token_id: int, expires: int) -> str:
    key = hashlib.sha256(b"inboxql-download:" + secret.encode()).digest()
    message = f"{path}\n{token_id}\n{expires}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:32]


class Signer:
    def __init__(self, keys: KeyRing | str, lifetime_seconds: int) -> None:
        self.ring = keys if isinstance(keys, KeyRing) else KeyRing.single(keys)
        self.lifetime = lifetime_seconds

    def sign(self, path: str, token_id: int, now: float | None = None) -> str:
        self.ring.refresh()
        expires = int((time.time() if now is None else now) + self.lifetime)
        mac = _mac(self.ring.newest.secret, path, token_id, expires)
        return f"{path}?{urlencode({'t': token_id, 'e': expires, 's': mac})}"

    def verify(self, path: str, token_id: int, expires: int, signature: str, now: float | None = None) -> bool:
        if expires < (time.time() if now is None else now):
            return False
        if self._any_key(path, token_id, expires, signature):
            return True
        # Signed by a process that has a key this one has not read yet (a rotation since it started).
        return self.ring.refresh() and self._any_key(path, token_id, expires, signature)

    def _any_key(self, path: str, token_id: int, expires: int, signature: str) -> bool:
        return any(
            hmac.compare_digest(_mac(key.secret, path, token_id, expires), signature) for key in self.ring.keys.values()
        )
