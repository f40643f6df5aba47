"""SASL mechanisms for OAuth2 access tokens: XOAUTH2 (Google's, also Microsoft's) and OAUTHBEARER (RFC 7628).

Pure functions of strings and bytes, so their tests are tables. `choose` picks by what the server advertises:
OAUTHBEARER first (the standard one), XOAUTH2 else. Both mechanisms answer a refused token with a challenge (a
base64 JSON object saying why); the client must send one more line so that the server ends the exchange with its
tagged NO: XOAUTH2 an empty line, OAUTHBEARER a single %x01 (RFC 7628 §3.2.3).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = ["Mechanism", "TokenChallenge", "abort_response", "choose", "initial_response", "read_challenge"]

Mechanism = Literal["OAUTHBEARER", "XOAUTH2"]
# Preferred first: RFC 7628 is the standard; XOAUTH2 is what Gmail and Outlook long offered alone.
_PREFERENCE: tuple[Mechanism, ...] = ("OAUTHBEARER", "XOAUTH2")


def choose(advertised: Iterable[str]) -> Mechanism | None:
    """The mechanism to use given advertised names (`AUTH=XOAUTH2` from IMAP, `XOAUTH2` from SMTP's EHLO);
    None when the server offers neither."""
    names = {name.upper().removeprefix("AUTH=") for name in advertised}
    for mechanism in _PREFERENCE:
        if mechanism in names:
            return mechanism
    return None


def _gs2_name(user: str) -> str:
    # RFC 5801 §4: in a gs2 authzid, "=" is "=3D" and "," is "=2C".
    return user.replace("=", "=3D").replace(",", "=2C")


def initial_response(
    mechanism: Mechanism, user: str, token: str, *, host: str | None = None, port: int | None = None
) -> bytes:
    """The client's first message, not yet base64-encoded.

    XOAUTH2: ``user=USER ^A auth=Bearer TOKEN ^A ^A``. OAUTHBEARER (RFC 7628 §3.1): a GS2 header naming the user,
    then key=value pairs separated by ^A, host and port optional."""
    if "\x01" in user + token or "\r" in user + token or "\n" in user + token:
        raise ValueError("a user name or token holding control characters")
    if mechanism == "XOAUTH2":
        return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()
    pairs = ""
    if host is not None:
        pairs += f"host={host}\x01"
    if port is not None:
        pairs += f"port={port}\x01"
    return f"n,a={_gs2_name(user)},\x01{pairs}auth=Bearer {token}\x01\x01".encode()


def encoded_initial_response(
    mechanism: Mechanism, user: str, token: str, *, host: str | None = None, port: int | None = None
) -> bytes:
    return base64.b64encode(initial_response(mechanism, user, token, host=host, port=port))


def abort_response(mechanism: Mechanism) -> bytes:
    """What to send (base64, line end not included) after a challenge, to let the server finish with its NO."""
    return b"" if mechanism == "XOAUTH2" else base64.b64encode(b"\x01")


@dataclass(frozen=True, slots=True)
class TokenChallenge:
    """What a server said of a refused token (RFC 7628 §3.2.2: status, scope, openid-configuration)."""

    status: str | None
    scope: str | None = None

    @property
    def token_invalid(self) -> bool:
        """401 (or Google's "invalid_token") says the token was refused, not that the user may not log in."""
        return self.status in ("401", "invalid_token")


def read_challenge(text: bytes) -> TokenChallenge | None:
    """A server's challenge after a refused token: base64 of a JSON object; None when it is not one."""
    try:
        decoded = json.loads(base64.b64decode(text.strip(), validate=True))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(decoded, dict):
        return None
    status = decoded.get("status")
    scope = decoded.get("scope")
    return TokenChallenge(str(status) if status is not None else None, str(scope) if isinstance(scope, str) else None)
