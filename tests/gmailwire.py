"""The IMAP wire pieces of tests/gmailserver.py: reading a command's arguments and writing values (RFC 3501 §9)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Union

Token = Union[bytes, "list[Token]"]

CAPS = "IMAP4rev1 LITERAL+ IDLE NAMESPACE UIDPLUS MOVE CONDSTORE ENABLE SPECIAL-USE UNSELECT ID CHILDREN"
FLAGS = "\\Answered \\Flagged \\Draft \\Deleted \\Seen"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_SAFE = re.compile(rb"^[A-Za-z0-9\\$._/-]+$")


class Bad(Exception):
    """A command the server does not understand: tagged BAD."""


class No(Exception):
    """A command the server refuses: tagged NO."""


# -- wire helpers -----------------------------------------------------------------------------------------
def tokenize(data: bytes) -> list[Token]:
    """IMAP command arguments: atoms (a `[...]` section stays in its atom), quoted strings, literals, lists."""
    out: list[Token] = []
    stack: list[list[Token]] = [out]
    i, n = 0, len(data)
    while i < n:
        c = data[i : i + 1]
        if c in (b" ", b"\r", b"\n"):
            i += 1
        elif c == b"(":
            new: list[Token] = []
            stack[-1].append(new)
            stack.append(new)
            i += 1
        elif c == b")":
            if len(stack) == 1:
                raise Bad("unbalanced )")
            stack.pop()
            i += 1
        elif c == b'"':
            j, buf = i + 1, bytearray()
            while j < n and data[j : j + 1] != b'"':
                if data[j : j + 1] == b"\\":
                    j += 1
                buf += data[j : j + 1]
                j += 1
            stack[-1].append(bytes(buf))
            i = j + 1
        elif c == b"{":
            m = re.match(rb"\{(\d+)\+?\}\r\n", data[i:])
            if m is None:
                raise Bad("bad literal")
            start = i + m.end()
            size = int(m.group(1))
            stack[-1].append(data[start : start + size])
            i = start + size
        else:
            j, depth = i, 0
            while j < n:
                ch = data[j : j + 1]
                if ch == b"[":
                    depth += 1
                elif ch == b"]":
                    depth -= 1
                elif depth == 0 and ch in (b" ", b"(", b")", b"\r", b"\n"):
                    break
                j += 1
            stack[-1].append(data[i:j])
            i = j
    if len(stack) != 1:
        raise Bad("unbalanced (")
    return out


def astring(value: str) -> bytes:
    raw = value.encode()
    if _SAFE.match(raw) and raw.upper() != b"NIL":
        return raw
    if b'"' not in raw and b"\\" not in raw and b"\r" not in raw and b"\n" not in raw:
        return b'"' + raw + b'"'
    return b"{%d}\r\n" % len(raw) + raw


def quoted(value: str) -> bytes:
    return b'"' + value.replace("\\", "\\\\").replace('"', '\\"').encode() + b'"'


def text(token: Token) -> str:
    if not isinstance(token, bytes):
        raise Bad("expected a string")
    return token.decode("utf-8", "replace")


def words(token: Token) -> list[str]:
    return [text(t) for t in (token if isinstance(token, list) else [token])]


def internaldate(value: datetime) -> bytes:
    v = value.astimezone(UTC)
    return f'"{v.day:02d}-{_MONTHS[v.month - 1]}-{v.year:04d} {v:%H:%M:%S} +0000"'.encode()


def parse_set(spec: str, top: int) -> set[int]:
    """A sequence set (`1:5,7,9:*`) as numbers; `*` is `top`."""
    found: set[int] = set()
    for part in spec.split(","):
        ends = [top if e == "*" else int(e) for e in part.split(":")]
        if len(ends) == 1:
            found.add(ends[0])
        else:
            lo, hi = sorted(ends)
            found.update(range(lo, hi + 1))
    return found


ITEMS = {"UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "MODSEQ", "X-GM-MSGID", "X-GM-THRID", "X-GM-LABELS", "RFC822"}
