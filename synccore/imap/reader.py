"""Framing: cut the server's byte stream into complete responses (RFC 3501 §2.2.2, §4.3).

A response is a line, except that a line ending in a literal marker `{n}` (or RFC 3516's `~{n}`)
continues after exactly n raw bytes. The reader keeps one growing buffer, finds CRLFs with
`bytes.find` and cuts literals by slicing, so the cost is linear in the bytes received whatever
the chunking, and a multi-megabyte body costs one copy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ProtocolError

# RFC 3501 §9 literal = "{" number "}" CRLF; RFC 7888 adds "{n+}" (client side only, tolerated
# here); RFC 3516 §4.2 literal8 = "~{" number "}".
_LITERAL_AT_END = re.compile(rb"~?\{(\d+)\+?\}\Z")

# A line longer than this without CRLF is not IMAP but a broken or hostile peer.
MAX_LINE = 1 << 20
# A literal larger than this is refused before a byte of it is buffered: a server announcing {9999999999} would
# otherwise make the client hold whatever it sends. Far above any mail server's message size limit.
MAX_LITERAL = 256 << 20


@dataclass(slots=True)
class RawResponse:
    """One response: `lines[i]` is followed by `literals[i]` (so len(lines) == len(literals) + 1).

    The literal markers are cut off the lines; the lines carry no CRLF.
    """

    lines: list[bytes]
    literals: list[bytes]


class ResponseReader:
    """Incremental framer: `feed(chunk)` returns the responses completed by that chunk."""

    __slots__ = ("_buf", "_lines", "_literals", "_max_literal", "_need", "_scan_from")

    def __init__(self, max_literal: int = MAX_LITERAL) -> None:
        self._max_literal = max_literal
        self._buf = bytearray()
        self._lines: list[bytes] = []
        self._literals: list[bytes] = []
        self._need = -1  # bytes of literal still expected, or -1 when reading a line
        self._scan_from = 0  # where to resume the CRLF search (avoids rescanning a long line)

    @property
    def pending(self) -> int:
        """Bytes buffered that do not yet form a complete response."""
        return len(self._buf) + sum(map(len, self._lines)) + sum(map(len, self._literals))

    def feed(self, data: bytes) -> list[RawResponse]:
        buf = self._buf
        buf += data
        out: list[RawResponse] = []
        pos = 0
        end = len(buf)
        while pos < end:
            if self._need >= 0:
                if end - pos < self._need:
                    break
                stop = pos + self._need
                # One copy: slicing the bytearray first would make a second one (a 20 MiB body held three times).
                with memoryview(buf) as view:
                    self._literals.append(bytes(view[pos:stop]))
                pos = stop
                self._need = -1
                self._scan_from = pos
                continue
            nl = buf.find(b"\r\n", max(pos, self._scan_from))
            if nl < 0:
                if end - pos > MAX_LINE:
                    raise ProtocolError(f"response line longer than {MAX_LINE} bytes")
                # a CR at the very end may be the first half of a CRLF split across chunks
                self._scan_from = max(pos, end - 1)
                break
            line = bytes(buf[pos:nl])
            pos = nl + 2
            self._scan_from = pos
            if line.endswith(b"}"):
                m = _LITERAL_AT_END.search(line)
                if m is not None:
                    size = int(m.group(1))
                    if size > self._max_literal:
                        raise ProtocolError(f"a literal of {size} bytes is over the limit of {self._max_literal}")
                    self._lines.append(line[: m.start()])
                    self._need = size
                    continue
            self._lines.append(line)
            out.append(RawResponse(self._lines, self._literals))
            self._lines = []
            self._literals = []
        if pos:
            del buf[:pos]
            self._scan_from -= pos
        return out
