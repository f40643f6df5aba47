"""Typed values of IMAP responses (RFC 3501 §7 and the extensions we speak).

The parser (`parser.py`) turns bytes into these; the client (`client.py`) assembles them into results.
All are immutable-ish slotted dataclasses so that 10k FETCH responses stay cheap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, TypeAlias

# A generic parsed value: atoms and strings are bytes, NIL is None, parenthesised lists are lists.
Value: TypeAlias = bytes | list["Value"] | None
_NOTHING: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class AppendUid:
    """RFC 4315 §3: `[APPENDUID uidvalidity uid-set]`."""

    uidvalidity: int
    uids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class CopyUid:
    """RFC 4315 §3: `[COPYUID uidvalidity source-set dest-set]`, positionally paired."""

    uidvalidity: int
    source: tuple[int, ...]
    dest: tuple[int, ...]

    def mapping(self) -> dict[int, int]:
        return dict(zip(self.source, self.dest, strict=True))


# What a response code carries once parsed: a number (UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ, UNSEEN),
# words (CAPABILITY, PERMANENTFLAGS, BADCHARSET), uid lists (MODIFIED), APPENDUID/COPYUID, raw text
# for codes we do not know, or None for bare codes (NOMODSEQ, READ-ONLY, TRYCREATE, CLOSED, ...).
CodeValue: TypeAlias = int | tuple[str, ...] | tuple[int, ...] | AppendUid | CopyUid | str | None


@dataclass(frozen=True, slots=True)
class ResponseCode:
    """RFC 3501 §7.1: the bracketed code of a status response, e.g. `[UIDVALIDITY 3857529045]`."""

    name: str
    value: CodeValue = None


@dataclass(frozen=True, slots=True)
class StatusResponse:
    """OK / NO / BAD / PREAUTH / BYE, tagged (tag set) or untagged (tag None)."""

    tag: str | None
    status: str
    code: ResponseCode | None
    text: str


@dataclass(frozen=True, slots=True)
class Continuation:
    """RFC 3501 §7.5: `+ text`, the server is ready for a literal or for more SASL data."""

    text: bytes


@dataclass(frozen=True, slots=True)
class Exists:
    count: int


@dataclass(frozen=True, slots=True)
class Recent:
    count: int


@dataclass(frozen=True, slots=True)
class Expunge:
    seq: int


@dataclass(frozen=True, slots=True)
class Vanished:
    """RFC 7162 §3.2.10: UIDs removed; `earlier` marks the (EARLIER) form answering a resync."""

    uids: list[int]
    earlier: bool


@dataclass(frozen=True, slots=True)
class Flags:
    flags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Capability:
    capabilities: frozenset[str]


@dataclass(frozen=True, slots=True)
class Enabled:
    """RFC 5161 §3.2."""

    capabilities: frozenset[str]


@dataclass(frozen=True, slots=True)
class Mailbox:
    """One `* LIST` answer. `name` is decoded from modified UTF-7; `raw_name` is what to send back."""

    name: str
    raw_name: bytes
    delimiter: str | None
    flags: frozenset[str]


@dataclass(frozen=True, slots=True)
class MailboxStatus:
    """RFC 3501 §7.2.4: `* STATUS name (MESSAGES 2 UIDNEXT 7 ...)`."""

    name: str
    raw_name: bytes
    items: dict[str, int]


@dataclass(frozen=True, slots=True)
class Search:
    """RFC 3501 §7.2.5 `* SEARCH`, with RFC 7162 §3.1.5's trailing `(MODSEQ n)`."""

    numbers: list[int]
    modseq: int | None = None


@dataclass(frozen=True, slots=True)
class ESearch:
    """RFC 4731 §3.1: `* ESEARCH (TAG "a") UID MIN 2 COUNT 3 ALL 2,10:11`."""

    tag: str | None
    uid: bool
    all: list[int]
    min: int | None = None
    max: int | None = None
    count: int | None = None
    modseq: int | None = None


@dataclass(slots=True)
class FetchItem:
    """One `* n FETCH (...)` response.

    `body` is the whole message (`BODY[]`, `BINARY[]` or `RFC822`); every body section, including
    `body`'s own, is also in `sections` under its upper-cased item name (`"BODY[HEADER]"`). Items
    this class does not know are kept parsed in `extra`.
    """

    seq: int
    uid: int | None = None
    flags: tuple[str, ...] | None = None
    modseq: int | None = None
    internaldate: datetime | None = None
    size: int | None = None
    body: bytes | None = None
    x_guid: str | None = None
    email_id: str | None = None
    thread_id: str | None = None
    gm_msgid: int | None = None
    gm_thrid: int | None = None
    gm_labels: tuple[str, ...] | None = None
    # Shared and empty unless the response had such items: a listing of 100,000 messages carries neither, and two
    # empty dicts an item were a fifth of its memory.
    sections: Mapping[str, bytes | None] = field(default_factory=lambda: _NOTHING)
    extra: Mapping[str, Value] = field(default_factory=lambda: _NOTHING)


@dataclass(frozen=True, slots=True)
class Unknown:
    """An untagged response this package does not model (`* ID`, `* NAMESPACE`, `* THREAD`...)."""

    name: str
    values: list[Value]


Untagged: TypeAlias = (
    StatusResponse
    | Exists
    | Recent
    | Expunge
    | Vanished
    | Flags
    | Capability
    | Enabled
    | Mailbox
    | MailboxStatus
    | Search
    | ESearch
    | FetchItem
    | Unknown
)
Response: TypeAlias = Untagged | Continuation
