"""Opaque ids and cursors: the one codec of every token the gateway hands out and takes back.

All are base64url without padding of a short text: opaque to clients (they must only compare and pass them
back), stable across processes.

* A global id (Relay's Node) is "Type:number": it names its type, so ``node(id:)`` needs no lookup table.
  Webhook and Upload ids have the same shape with a type of their own (not Nodes: ``node(id:)`` does not
  serve them).
* A page cursor is a JSON list of the sort key values of one row (never an offset), so a page starts exactly
  after the row the client last saw, however many rows arrived before it (gateway.graphql.pages).
* A change cursor is "changes:ACCOUNT:SEQ". It names its account, so a cursor of one account passed for
  another is BAD_USER_INPUT rather than a silent jump (gateway.graphql.changes).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from gateway.errors import BadUserInput

NODE_TYPES = ("Account", "Folder", "Label", "Thread", "Message", "Attachment", "Action", "OutboxEntry")
_MAX_ID = 2**63 - 1


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _b64encode(raw: bytes) -> str:
    # base64.urlsafe_b64encode, without its two extra calls: a page of threads makes about 150 of these.
    return binascii.b2a_base64(raw, newline=False).translate(_URLSAFE).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    if len(text) > 512:
        raise ValueError("too long")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# -- global ids ---------------------------------------------------------------------------------------------


def to_global(type_name: str, pk: int) -> str:
    return _b64encode(f"{type_name}:{pk}".encode())


def _parse_global(gid: str) -> tuple[str, int] | None:
    """(type name, primary key) of anything shaped like a global id; None otherwise."""
    try:
        type_name, _, number = _b64decode(gid).decode("ascii").partition(":")
        pk = int(number)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        return None
    if not 0 < pk <= _MAX_ID or number != str(pk):
        return None
    return type_name, pk


def from_global(gid: str) -> tuple[str, int]:
    """(type name, primary key) of a global id; BadUserInput when it is not one of ours."""
    found = _parse_global(gid)
    if found is None or found[0] not in NODE_TYPES:
        raise BadUserInput(f"not a valid id: {gid[:64]!r}")
    return found


def pk_of(gid: str, type_name: str) -> int:
    """The primary key of a global id that must name a `type_name` (an id of another type: BadUserInput)."""
    found, pk = from_global(gid)
    if found != type_name:
        raise BadUserInput(f"expected an id of a {type_name}")
    return pk


def webhook_pk(gid: str) -> int:
    """The primary key of a webhook id; BadUserInput when it is not one."""
    found = _parse_global(gid)
    if found is None or found[0] != "Webhook":
        raise BadUserInput("not a valid webhook id")
    return found[1]


# -- page cursors -------------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"t": value.isoformat()}
    return value


def _unjson(value: Any) -> Any:
    if isinstance(value, dict):
        return datetime.fromisoformat(str(value["t"]))
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("bad cursor value")
    return value


# json.dumps with any option builds an encoder per call; the cursors' one is built once.
_CURSOR_JSON = json.JSONEncoder(separators=(",", ":"))


def encode_page_cursor(values: Sequence[Any]) -> str:
    # The JSON of the usual values (ints, finite floats, datetimes) is written directly: a page makes up to a
    # hundred cursors, and the encoder's call took half of each. The text is the encoder's, to the byte.
    parts: list[str] = []
    for value in values:
        kind = type(value)
        if kind is int:
            parts.append(int.__repr__(value))
        elif kind is float and math.isfinite(value):
            parts.append(float.__repr__(value))
        elif kind is datetime:
            parts.append('{"t":"' + value.isoformat() + '"}')
        else:
            return _b64encode(_CURSOR_JSON.encode([_jsonable(v) for v in values]).encode())
    return _b64encode(("[" + ",".join(parts) + "]").encode())


def decode_page_cursor(cursor: str, arity: int) -> tuple[Any, ...]:
    try:
        values = json.loads(_b64decode(cursor))
        if not isinstance(values, list) or len(values) != arity:
            raise ValueError("wrong arity")
        return tuple(_unjson(v) for v in values)
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise BadUserInput("not a valid cursor") from None


# -- change cursors -----------------------------------------------------------------------------------------


def encode_change_cursor(account_id: int, seq: int) -> str:
    return _b64encode(f"changes:{account_id}:{seq}".encode())


def decode_change_cursor(cursor: str, account_id: int) -> int:
    """The seq of a change cursor of that account; BadUserInput when it is not one."""
    try:
        kind, account, seq = _b64decode(cursor).decode("ascii").split(":")
        found_account, found_seq = int(account), int(seq)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise BadUserInput("not a valid change cursor") from None
    if kind != "changes" or found_seq < 0 or seq != str(found_seq):
        raise BadUserInput("not a valid change cursor")
    if found_account != account_id:
        raise BadUserInput("the change cursor belongs to another account")
    return found_seq


def upload_pk(gid: str) -> int:
    """The primary key of an upload id (POST /uploads); BadUserInput when it is not one."""
    found = _parse_global(gid)
    if found is None or found[0] != "Upload":
        raise BadUserInput("not a valid upload id")
    return found[1]
