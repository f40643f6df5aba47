"""Encoding commands: astring quoting, literals, and cutting a command where it must wait for `+`.

RFC 3501 §4.3 / §7.5: a synchronizing literal `{n}` must wait for the server's continuation before
its bytes are sent; RFC 7888 LITERAL+ `{n+}` need not wait (LITERAL- only up to 4096 bytes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .utf7 import encode_mailbox


@dataclass(frozen=True, slots=True)
class Literal:
    """Bytes sent as a literal. `binary` makes it RFC 3516's literal8 `~{n}` (may hold NUL)."""

    data: bytes
    binary: bool = False


Part = bytes | Literal

# RFC 3501 §9: ASTRING-CHAR = ATOM-CHAR / resp-specials; ATOM-CHAR excludes "(){ SP CTL % * " \ ]"
# and resp-specials is "]". Anything else must be quoted.
_ATOM_SAFE = re.compile(rb"[!#$&'+,\-./0-9:;<=>?@A-Z\[\]^_`a-z|}~]+\Z")
# A quoted string may not hold CR, LF, NUL or 8-bit bytes (RFC 3501 §9 QUOTED-CHAR): those need
# a literal.
_NEEDS_LITERAL = re.compile(rb"[\x00\r\n\x80-\xff]")


def astring(value: str | bytes) -> Part:
    """Quote a string argument the least that is correct: atom, quoted string, or literal."""
    raw = value.encode("utf-8") if isinstance(value, str) else value
    if _ATOM_SAFE.match(raw):
        return raw
    if _NEEDS_LITERAL.search(raw):
        return Literal(raw)
    return quoted(raw)


def quoted(raw: bytes) -> bytes:
    """RFC 3501 §9 quoted: backslash escapes `"` and `\\`; caller ensures no CR/LF/8-bit."""
    return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def mailbox(name: str | bytes) -> Part:
    """A mailbox argument: str is modified-UTF-7 encoded (RFC 3501 §5.1.3); bytes go as given."""
    return astring(encode_mailbox(name) if isinstance(name, str) else name)


def encode_command(
    tag: bytes, parts: list[Part], *, literal_plus: bool = False, literal_minus: bool = False
) -> list[tuple[bytes, bool]]:
    """Serialise `tag SP part SP part ... CRLF` into segments to write.

    Each segment is (bytes, wait): when `wait` is true the writer must wait for a continuation
    request before sending the next segment. The last segment ends in CRLF and never waits.
    """
    segments: list[tuple[bytes, bool]] = []
    buf = bytearray(tag)
    for part in parts:
        buf += b" "
        if isinstance(part, bytes):
            buf += part
            continue
        size = len(part.data)
        nonsync = literal_plus or (literal_minus and size <= 4096)
        buf += b"~" if part.binary else b""
        buf += b"{%d%s}\r\n" % (size, b"+" if nonsync else b"")
        if nonsync:
            buf += part.data
        else:
            segments.append((bytes(buf), True))
            buf = bytearray(part.data)
    buf += b"\r\n"
    segments.append((bytes(buf), False))
    return segments
