"""Parse framed responses (`reader.RawResponse`) into typed values (`responses.py`). Pure functions.

Grammar references are to RFC 3501 §9 unless stated. The tokenizer runs a regex over the short line
parts only; literals (message bodies) are never scanned, only placed into the value tree.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from .errors import ProtocolError
from .reader import RawResponse, ResponseReader
from .responses import (
    AppendUid,
    Capability,
    CodeValue,
    Continuation,
    CopyUid,
    Enabled,
    ESearch,
    Exists,
    Expunge,
    FetchItem,
    Flags,
    Mailbox,
    MailboxStatus,
    Recent,
    Response,
    ResponseCode,
    Search,
    StatusResponse,
    Unknown,
    Untagged,
    Value,
    Vanished,
)
from .uidset import parse_uid_set
from .utf7 import decode_mailbox_lenient

# One token: "(" | ")" | quoted string | atom, or any other byte (an error). An atom may hold
# bracketed parts with spaces, as in `BODY[HEADER.FIELDS (SUBJECT)]<0>`, and astrings may hold "]"
# (resp-specials), as in Gmail's `[Gmail]/Sent` label, so a bracket group is taken whole. The quoted
# group keeps its quotes so that an empty string is told apart from "no match" by `findall`.
_TOKEN = re.compile(rb' *(?:((?:[^ ()"\[\]\r\n]|\[[^\]\r\n]*\]|\])+)|(\()|(\))|("(?:[^"\\\r\n]|\\.)*")|([^ ]))')
_UNESCAPE = re.compile(rb"\\(.)")
_STATUS_WORDS = frozenset({b"OK", b"NO", b"BAD", b"PREAUTH", b"BYE"})


def _s(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def tokenize(raw: RawResponse) -> list[Value]:
    """Turn a response into a value tree: atoms and strings -> bytes, NIL -> None, (..) -> list."""
    root: list[Value] = []
    stack: list[list[Value]] = [root]
    current = root
    literals = raw.literals
    n_literals = len(literals)
    for index, line in enumerate(raw.lines):
        # findall runs the scan in C; each tuple has exactly one non-empty group.
        for atom, opening, closing, quoted, bad in _TOKEN.findall(line):
            if atom:
                current.append(None if len(atom) == 3 and atom.upper() == b"NIL" else atom)
            elif opening:
                child: list[Value] = []
                current.append(child)
                stack.append(child)
                current = child
            elif closing:
                if len(stack) == 1:
                    raise ProtocolError(f"unbalanced ')' in {line[:60]!r}")
                stack.pop()
                current = stack[-1]
            elif quoted:
                text = quoted[1:-1]
                current.append(_UNESCAPE.sub(rb"\1", text) if b"\\" in text else text)
            else:
                raise ProtocolError(f"cannot tokenize {bad!r} in {line[:60]!r}")
        if index < n_literals:
            current.append(literals[index])
    if len(stack) != 1:
        raise ProtocolError("unbalanced '(' in response")
    return root


def parse_response(raw: RawResponse) -> tuple[str | None, Response]:
    """Parse one framed response. Returns (tag, value); tag is None for untagged and `+`.

    Raises ProtocolError for anything that is not IMAP.
    """
    try:
        return _parse_response(raw)
    except (ValueError, IndexError) as exc:  # bad numbers, sets, encodings, missing fields
        raise ProtocolError(f"cannot parse {raw.lines[0][:80]!r}: {exc}") from exc


def _parse_response(raw: RawResponse) -> tuple[str | None, Response]:
    first = raw.lines[0]
    if first.startswith(b"+"):
        return None, Continuation(b"".join(raw.lines)[1:].lstrip(b" "))
    tag, sep, rest = first.partition(b" ")
    if not sep:
        raise ProtocolError(f"response without a space: {first[:60]!r}")
    if tag == b"*":
        return None, _parse_untagged(raw, rest)
    word = rest.partition(b" ")[0]
    if word.upper() not in _STATUS_WORDS:
        raise ProtocolError(f"tagged response without status: {first[:60]!r}")
    return tag.decode("ascii", "replace"), parse_status(tag.decode("ascii", "replace"), rest)


def parse_status(tag: str | None, rest: bytes) -> StatusResponse:
    """`OK [CODE args] text` (RFC 3501 §7.1), with the tag and `* ` already removed."""
    word, _, text = rest.partition(b" ")
    code: ResponseCode | None = None
    if text.startswith(b"["):
        close = _find_code_end(text)
        code = parse_code(text[1:close])
        text = text[close + 1 :].lstrip(b" ")
    return StatusResponse(tag, word.upper().decode("ascii"), code, _s(text))


def _find_code_end(text: bytes) -> int:
    # A "]" inside a quoted string does not close the code (e.g. BADCHARSET with odd names).
    in_quote = False
    i = 1
    while i < len(text):
        c = text[i]
        if in_quote:
            if c == 0x5C:  # backslash escapes the next byte
                i += 1
            elif c == 0x22:
                in_quote = False
        elif c == 0x22:
            in_quote = True
        elif c == 0x5D:
            return i
        i += 1
    raise ProtocolError(f"unterminated response code: {text[:60]!r}")


_NUMBER_CODES = frozenset({"UIDVALIDITY", "UIDNEXT", "UNSEEN", "HIGHESTMODSEQ"})
_WORD_CODES = frozenset({"CAPABILITY", "PERMANENTFLAGS", "BADCHARSET"})


def parse_code(body: bytes) -> ResponseCode:
    """The inside of a response code: `UIDVALIDITY 3857529045` -> ResponseCode("UIDVALIDITY", ...)."""
    name_raw, _, args = body.partition(b" ")
    name = name_raw.upper().decode("ascii", "replace")
    value: CodeValue
    if name in _NUMBER_CODES:
        value = _int(args.strip())
    elif name in _WORD_CODES:
        if name == "CAPABILITY":
            value = tuple(w.upper().decode("ascii", "replace") for w in args.split())
        else:
            values = tokenize(RawResponse([args], []))
            words = values[0] if len(values) == 1 and isinstance(values[0], list) else values
            value = tuple(_s(w) for w in words if isinstance(w, bytes))
    elif name == "APPENDUID":
        parts = args.split()
        value = AppendUid(_int(parts[0]), tuple(parse_uid_set(parts[1])))
    elif name == "COPYUID":
        parts = args.split()
        value = CopyUid(_int(parts[0]), tuple(parse_uid_set(parts[1])), tuple(parse_uid_set(parts[2])))
    elif name == "MODIFIED":
        # RFC 7162 §3.1.3: UIDs (for UID STORE) whose UNCHANGEDSINCE test failed
        value = tuple(parse_uid_set(args.strip()))
    else:
        value = _s(args) if args else None
    return ResponseCode(name, value)


def _int(raw: Value) -> int:
    if not isinstance(raw, bytes) or not raw.isdigit():
        raise ProtocolError(f"expected a number, got {raw!r}")
    return int(raw)


def _words(raw: Value) -> tuple[str, ...]:
    if not isinstance(raw, list):
        raise ProtocolError(f"expected a list, got {raw!r}")
    return tuple(_s(w) for w in raw if isinstance(w, bytes))


# The flag lists of FETCH responses seen lately, each decoded once: a mailbox has a few distinct sets (\Seen,
# \Seen \Flagged, none...), and a listing of 100,000 messages held a tuple and its strings per message. Bounded:
# keywords are the server's to invent.
_FLAG_SETS: dict[tuple[bytes, ...], tuple[str, ...]] = {}
_FLAG_SETS_MAX = 1024


def _flag_set(raw: Value) -> tuple[str, ...]:
    if not isinstance(raw, list):
        raise ProtocolError(f"expected a list, got {raw!r}")
    key = tuple(w for w in raw if isinstance(w, bytes))
    found = _FLAG_SETS.get(key)
    if found is None:
        if len(_FLAG_SETS) >= _FLAG_SETS_MAX:
            _FLAG_SETS.clear()
        found = _FLAG_SETS[key] = tuple(_s(w) for w in key)
    return found


# The FETCH a flag change brings (a STORE's answer, another session's change told to IDLE or NOTIFY, a listing of
# flags): UID, FLAGS and MODSEQ only, on one line. Taken apart by one regex instead of the tokenizer and the item
# loop (a third of the CPU of a 1,000-message STORE's answer; BENCHMARKS.md, write-back). Anything else, or
# anything unusual in one (lower case, a quoted or bracketed flag, NIL), goes the general way.
_QUICK_ITEM = rb"UID \d+|FLAGS \([^()\"{}\[\]\r\n]*\)|MODSEQ \(\d+\)"
_QUICK_FETCH = re.compile(rb"FETCH \(((?:" + _QUICK_ITEM + rb")(?: (?:" + _QUICK_ITEM + rb"))*)\)")
_QUICK_ITEMS = re.compile(rb"(UID) (\d+)|(FLAGS) \(([^)]*)\)|(MODSEQ) \((\d+)\)")


def _quick_fetch(seq: int, tail: bytes) -> FetchItem | None:
    """`FETCH (UID n FLAGS (...) MODSEQ (n))`, any of them in any order, as parse_fetch would read it; None for
    any other shape."""
    whole = _QUICK_FETCH.fullmatch(tail)
    if whole is None:
        return None
    item = FetchItem(seq)
    for uid, uid_value, flags, flag_words, _, modseq_value in _QUICK_ITEMS.findall(whole.group(1)):
        if uid:
            item.uid = int(uid_value)
        elif flags:
            words = flag_words.split()
            if any(len(w) == 3 and w.upper() == b"NIL" for w in words):
                return None
            item.flags = _flag_set(words)
        else:
            item.modseq = int(modseq_value)
    return item


def _parse_untagged(raw: RawResponse, rest: bytes) -> Untagged:
    word, _, tail = rest.partition(b" ")
    if word.isdigit():
        kind, _, _ = tail.partition(b" ")
        kind = kind.upper()
        if kind == b"FETCH":
            if not raw.literals:
                quick = _quick_fetch(int(word), tail)
                if quick is not None:
                    return quick
            values = tokenize(raw)
            if len(values) != 4 or not isinstance(values[3], list):
                raise ProtocolError(f"malformed FETCH: {raw.lines[0][:60]!r}")
            return parse_fetch(int(word), values[3])
        if kind == b"EXISTS":
            return Exists(int(word))
        if kind == b"EXPUNGE":
            return Expunge(int(word))
        if kind == b"RECENT":
            return Recent(int(word))
        return Unknown(kind.decode("ascii", "replace"), [word, *tokenize(raw)[3:]])
    upper = word.upper()
    if upper in _STATUS_WORDS:
        return parse_status(None, rest)
    handler = _UNTAGGED.get(upper)
    values = tokenize(raw)[2:]
    if handler is None:
        return Unknown(upper.decode("ascii", "replace"), values)
    return handler(values)


def _capability(values: list[Value]) -> Untagged:
    return Capability(frozenset(_s(v).upper() for v in values if isinstance(v, bytes)))


def _enabled(values: list[Value]) -> Untagged:
    return Enabled(frozenset(_s(v).upper() for v in values if isinstance(v, bytes)))


def _flags(values: list[Value]) -> Untagged:
    return Flags(_words(values[0]) if values else ())


def _list(values: list[Value]) -> Untagged:
    # RFC 3501 §7.2.2: "(" flags ")" SP (quoted delimiter / NIL) SP mailbox [extended data]
    if len(values) < 3:
        raise ProtocolError(f"malformed LIST: {values!r}")
    flags, delim, name = values[0], values[1], values[2]
    if not isinstance(name, bytes):
        raise ProtocolError(f"LIST without a mailbox name: {values!r}")
    return Mailbox(
        name=decode_mailbox_lenient(name),
        raw_name=name,
        delimiter=_s(delim) if isinstance(delim, bytes) else None,
        flags=frozenset(_words(flags)),
    )


def _status(values: list[Value]) -> Untagged:
    if len(values) != 2 or not isinstance(values[0], bytes) or not isinstance(values[1], list):
        raise ProtocolError(f"malformed STATUS: {values!r}")
    pairs = values[1]
    items = {_s(_bytes(k)).upper(): _int(v) for k, v in zip(pairs[::2], pairs[1::2], strict=True)}
    return MailboxStatus(decode_mailbox_lenient(values[0]), values[0], items)


def _bytes(value: Value) -> bytes:
    if not isinstance(value, bytes):
        raise ProtocolError(f"expected an atom or string, got {value!r}")
    return value


def _search(values: list[Value]) -> Untagged:
    numbers: list[int] = []
    modseq: int | None = None
    for v in values:
        if isinstance(v, list):  # RFC 7162 §3.1.5: (MODSEQ n)
            if len(v) == 2 and _bytes(v[0]).upper() == b"MODSEQ":
                modseq = _int(v[1])
        else:
            numbers.append(_int(v))
    return Search(numbers, modseq)


def _esearch(values: list[Value]) -> Untagged:
    tag: str | None = None
    i = 0
    if values and isinstance(values[0], list):
        corr = values[0]  # RFC 4731: search-correlator = "(" "TAG" SP tag-string ")"
        if len(corr) == 2 and _bytes(corr[0]).upper() == b"TAG":
            tag = _s(_bytes(corr[1]))
        i = 1
    uid = False
    if i < len(values) and isinstance(values[i], bytes) and _bytes(values[i]).upper() == b"UID":
        uid = True
        i += 1
    found: list[int] = []
    numbers: dict[str, int] = {}
    # RFC 4731 §3.1: search-return-data = name SP value, repeated; unknown names are skipped
    for key_raw, val in zip(values[i::2], values[i + 1 :: 2], strict=False):
        key = _s(_bytes(key_raw)).upper()
        if key == "ALL":
            found = parse_uid_set(_bytes(val))
        elif key in ("MIN", "MAX", "COUNT", "MODSEQ"):
            numbers[key.lower()] = _int(val)
    return ESearch(
        tag,
        uid,
        found,
        min=numbers.get("min"),
        max=numbers.get("max"),
        count=numbers.get("count"),
        modseq=numbers.get("modseq"),
    )


def _vanished(values: list[Value]) -> Untagged:
    earlier = False
    if values and isinstance(values[0], list):
        earlier = any(isinstance(v, bytes) and v.upper() == b"EARLIER" for v in values[0])
        values = values[1:]
    if len(values) != 1:
        raise ProtocolError(f"malformed VANISHED: {values!r}")
    return Vanished(parse_uid_set(_bytes(values[0])), earlier)


_UNTAGGED: dict[bytes, Callable[[list[Value]], Untagged]] = {
    b"CAPABILITY": _capability,
    b"ENABLED": _enabled,
    b"FLAGS": _flags,
    b"LIST": _list,
    b"LSUB": _list,
    b"STATUS": _status,
    b"SEARCH": _search,
    b"ESEARCH": _esearch,
    b"VANISHED": _vanished,
}

_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        (b"JAN", b"FEB", b"MAR", b"APR", b"MAY", b"JUN", b"JUL", b"AUG", b"SEP", b"OCT", b"NOV", b"DEC")
    )
}
_ZONES: dict[bytes, timezone] = {}


def parse_internaldate(raw: bytes) -> datetime:
    """RFC 3501 §9 date-time: `"17-Jul-1996 02:44:25 -0700"` (day may be space-padded).

    Hand-parsed: `strptime` costs ~10 µs and depends on the locale for month names.
    """
    try:
        date, clock, zone = raw.split()
        day, month, year = date.split(b"-")
        hour, minute, second = clock.split(b":")
        tz = _ZONES.get(zone)
        if tz is None:
            sign = -1 if zone[:1] == b"-" else 1
            offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5]))
            tz = _ZONES.setdefault(zone, timezone(sign * offset))
        return datetime(
            int(year),
            _MONTHS[month.upper()],
            int(day),
            int(hour),
            int(minute),
            int(second),
            tzinfo=tz,
        )
    except (ValueError, KeyError) as exc:
        raise ProtocolError(f"bad INTERNALDATE {raw!r}") from exc


def _first(value: Value) -> Value:
    # MODSEQ (n), EMAILID (id), THREADID (id) | NIL: a parenthesised single value (RFC 7162, 8474)
    if isinstance(value, list):
        return value[0] if value else None
    return value


def parse_fetch(seq: int, pairs: list[Value]) -> FetchItem:
    """RFC 3501 §7.4.2 msg-att: alternate item names and values."""
    item = FetchItem(seq)
    sections: dict[str, bytes | None] = {}
    extra: dict[str, Value] = {}
    n = len(pairs)
    if n % 2:
        raise ProtocolError(f"odd FETCH item list for message {seq}")
    for i in range(0, n, 2):
        key_raw = pairs[i]
        value = pairs[i + 1]
        if not isinstance(key_raw, bytes):
            raise ProtocolError(f"FETCH item name is not an atom: {key_raw!r}")
        key = key_raw.upper()
        if key == b"UID":
            item.uid = _int(value)
        elif key == b"FLAGS":
            item.flags = _flag_set(value)
        elif key == b"MODSEQ":
            item.modseq = _int(_first(value))
        elif key == b"INTERNALDATE":
            item.internaldate = parse_internaldate(_bytes(value))
        elif key == b"RFC822.SIZE":
            item.size = _int(value)
        elif key == b"X-GUID":
            item.x_guid = _s(_bytes(value))
        elif key == b"EMAILID":
            item.email_id = _s(_bytes(_first(value)))
        elif key == b"THREADID":
            tid = _first(value)
            item.thread_id = _s(tid) if isinstance(tid, bytes) else None
        elif key == b"X-GM-MSGID":
            item.gm_msgid = _int(value)
        elif key == b"X-GM-THRID":
            item.gm_thrid = _int(value)
        elif key == b"X-GM-LABELS":
            # Gmail: labels are astrings in modified UTF-7; system labels are quoted "\\Inbox"
            if not isinstance(value, list):
                raise ProtocolError(f"X-GM-LABELS is not a list: {value!r}")
            item.gm_labels = tuple(decode_mailbox_lenient(v) for v in value if isinstance(v, bytes))
        elif key.startswith((b"BODY[", b"BINARY[", b"RFC822")):
            if value is not None and not isinstance(value, bytes):
                raise ProtocolError(f"{key!r} is not a string")
            if key.startswith(b"BODY[]") or key.startswith(b"BINARY[]") or key == b"RFC822":
                item.body = value
            sections[key.decode("ascii", "replace")] = value
        else:
            extra[key.decode("ascii", "replace")] = value
    if sections:
        item.sections = sections
    if extra:
        item.extra = extra
    return item


def parse_stream(chunks: list[bytes]) -> list[tuple[str | None, Response]]:
    """Parse a whole conversation given as chunks (a convenience for tests and tools)."""
    reader = ResponseReader()
    out: list[tuple[str | None, Response]] = []
    for chunk in chunks:
        out.extend(parse_response(raw) for raw in reader.feed(chunk))
    return out
