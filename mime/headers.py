"""Header field values: RFC 2047 encoded-words, addresses, message ids and dates."""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from email.utils import getaddresses, parsedate_tz

from .charsets import decode_bytes

__all__ = [
    "Address",
    "collapse",
    "decode_text_header",
    "decode_words",
    "parse_addresses",
    "parse_date",
    "parse_message_id",
    "parse_msg_ids",
    "plain_addresses",
    "raw_to_text",
]


@dataclass(frozen=True, slots=True)
class Address:
    name: str
    address: str


_FOLD = re.compile(r"\r?\n|\r")
# RFC 2047 §2 encoded-word. Like the stdlib's lenient parser, we also decode words that touch
# surrounding text and Q words holding spaces (both are common in real mail).
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([qQbB])\?([^?]*)\?=")
_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")


def raw_to_text(value: str) -> str:
    """A raw header value (bytes as latin-1 text, so undeclared 8-bit is kept) -> unfolded text."""
    if not value.isascii():
        value = decode_bytes(value.encode("latin-1", "replace"), None)
    if "\n" in value or "\r" in value:
        value = _FOLD.sub("", value)
    if "\x00" in value:
        value = value.replace("\x00", "")
    return value


def _decode_encoded_word(encoding: str, text: str) -> bytes | None:
    data = text.encode("utf-8")
    try:
        if encoding in "qQ":
            return binascii.a2b_qp(data, header=True)
        data = _B64_JUNK.sub(b"", data)
        rest = len(data) % 4
        if rest == 1:
            data = data[:-1]
        elif rest:
            data += b"=" * (4 - rest)
        return binascii.a2b_base64(data)
    except (binascii.Error, ValueError):
        return None


def decode_words(value: str) -> str:
    """Decode RFC 2047 encoded-words in unfolded header text.

    Whitespace between adjacent encoded-words is dropped (§6.2), and adjacent words in one charset
    are decoded together, so a multi-byte character split across two words survives.
    """
    if "=?" not in value:
        return value
    out: list[str] = []
    pending = b""
    pending_charset = ""
    in_word = False  # the last thing emitted was an encoded-word (its bytes are in `pending`)
    pos = 0
    for m in _ENCODED_WORD.finditer(value):
        data = _decode_encoded_word(m.group(2), m.group(3))
        if data is None:
            continue  # not decodable: stays in the text as it stands
        charset = m.group(1).lower()
        between = value[pos : m.start()]
        adjacent = in_word and (not between or between.isspace())
        if adjacent and charset == pending_charset:
            pending += data
        else:
            if in_word:
                out.append(decode_bytes(pending, pending_charset))
            if not adjacent:
                out.append(between)
            pending, pending_charset = data, charset
        in_word = True
        pos = m.end()
    if in_word:
        out.append(decode_bytes(pending, pending_charset))
    out.append(value[pos:])
    return "".join(out)


def collapse(value: str) -> str:
    return " ".join(value.split())


def decode_text_header(raw: str) -> str:
    return collapse(decode_words(raw_to_text(raw)))


# No two neighbouring parts can match the same characters, so a hostile header cannot make the
# regex backtrack (it stays linear).
_PLAIN_MAILBOX = re.compile(r"(?:([^<>@]*)<([^<>@\s]+@[^<>@\s]+)>|\s*([^<>@\s]+@[^<>@\s]+))\s*")
_ADDRESS_SPECIALS = frozenset('"():;\\[]')


def plain_addresses(value: str) -> list[tuple[str, str]] | None:
    """The common forms (`Name <a@b>`, `a@b`), or None: getaddresses() is 3x slower."""
    if not _ADDRESS_SPECIALS.isdisjoint(value):
        return None
    pairs = []
    for item in value.split(","):
        if not item or item.isspace():
            continue
        found = _PLAIN_MAILBOX.fullmatch(item)
        if found is None:
            return None
        name, angled, bare = found.groups()
        pairs.append((" ".join(name.split()), angled) if angled else ("", bare))
    return pairs


def parse_addresses(raws: list[str]) -> tuple[Address, ...]:
    if not raws:
        return ()
    # Structure first, RFC 2047 second: a decoded name may hold commas or angle brackets.
    pairs: list[tuple[str, str]] = []
    for raw in raws:
        value = raw_to_text(raw)
        fast = plain_addresses(value)
        pairs.extend(fast if fast is not None else getaddresses([value]))
    result: list[Address] = []
    for name, address in pairs:
        name = collapse(decode_words(name)) if name else ""
        address = "".join(address.split())
        if name or address:
            result.append(Address(name, address))
    return tuple(result)


_MSG_ID = re.compile(r"<([^<>]*)>")


def parse_msg_ids(raw: str) -> list[str]:
    text = raw_to_text(raw)
    ids = ["".join(found.split()) for found in _MSG_ID.findall(text)]
    ids = [found for found in ids if found]
    if not ids:  # no brackets at all: bare ids separated by whitespace (seen from old mailers)
        ids = [token.strip("<>,;") for token in text.split() if "@" in token]
    return ids


def parse_message_id(raw: str | None) -> str | None:
    if raw is None:
        return None
    ids = parse_msg_ids(raw)
    if ids:
        return ids[0]
    stripped = "".join(raw_to_text(raw).split()).strip("<>")
    return stripped or None


def parse_date(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        parts = parsedate_tz(raw_to_text(raw))
        if parts is None:
            return None
        offset = parts[9] or 0  # RFC 5322 §3.3: -0000 means "no idea": take it as UTC
        zone = timezone(timedelta(seconds=offset))
        return datetime(*parts[:6], tzinfo=zone).astimezone(UTC)
    except (ValueError, OverflowError, TypeError, IndexError):
        return None
