"""Modified UTF-7 for mailbox names (RFC 3501 §5.1.3).

Printable US-ASCII (0x20-0x7e) stands for itself except "&", written "&-". Any other run of characters
is UTF-16BE, base64-encoded with "," in place of "/", without padding, between "&" and "-".
"""

from __future__ import annotations

import binascii
from base64 import b64decode, b64encode


def _encode_run(run: str) -> bytes:
    encoded = b64encode(run.encode("utf-16-be")).rstrip(b"=").replace(b"/", b",")
    return b"&" + encoded + b"-"


def encode_mailbox(name: str) -> bytes:
    """Encode a mailbox name for the wire: `"Entwürfe"` -> `b"Entw&APw-rfe"`."""
    if name.isascii() and "&" not in name and name.isprintable():
        return name.encode("ascii")
    out = bytearray()
    start = -1  # start index of the current run of characters needing base64, or -1
    for i, ch in enumerate(name):
        if 0x20 <= ord(ch) <= 0x7E:
            if start >= 0:
                out += _encode_run(name[start:i])
                start = -1
            out += b"&-" if ch == "&" else ch.encode("ascii")
        elif start < 0:
            start = i
    if start >= 0:
        out += _encode_run(name[start:])
    return bytes(out)


def decode_mailbox(raw: bytes) -> str:
    """Decode a wire mailbox name; raises ValueError when `raw` is not valid modified UTF-7."""
    if b"&" not in raw:
        # RFC 3501 §5.1.3: 8-bit bytes are not allowed; a server that sends UTF-8 here is
        # speaking UTF8=ACCEPT (RFC 6855) and the caller decides what to do.
        return raw.decode("ascii")
    parts: list[str] = []
    pos = 0
    while True:
        amp = raw.find(b"&", pos)
        if amp < 0:
            parts.append(raw[pos:].decode("ascii"))
            break
        parts.append(raw[pos:amp].decode("ascii"))
        dash = raw.find(b"-", amp + 1)
        if dash < 0:
            raise ValueError(f"unterminated modified UTF-7 shift in {raw!r}")
        chunk = raw[amp + 1 : dash]
        if not chunk:
            parts.append("&")
        else:
            padded = chunk.replace(b",", b"/") + b"=" * (-len(chunk) % 4)
            try:
                parts.append(b64decode(padded, validate=True).decode("utf-16-be"))
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise ValueError(f"bad modified UTF-7 in {raw!r}") from exc
        pos = dash + 1
    return "".join(parts)


def decode_mailbox_lenient(raw: bytes) -> str:
    """Like `decode_mailbox`, but falls back to UTF-8 (with replacement) for non-conforming names."""
    try:
        return decode_mailbox(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")
