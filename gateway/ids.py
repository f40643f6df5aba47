"""Opaque global ids (Relay's Node) and keyset cursors.

A global id is base64url("Type:number") without padding: opaque to clients (they must only compare and pass
it back), stable across processes, and it names its type so ``node(id:)`` needs no lookup table.
A cursor is base64url of a JSON list of the sort key values of one row (never an offset), so a page starts
exactly after the row the client last saw, however many rows arrived before it.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from gateway.errors import BadUserInput

NODE_TYPES = ("Account", "Folder", "Label", "Thread", "Message", "Attachment")
_MAX_ID = 2**63 - 1


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    if len(text) > 512:
        raise ValueError("too long")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def to_global(type_name: str, pk: int) -> str:
    return _b64encode(f"{type_name}:{pk}".encode())


def from_global(gid: str) -> tuple[str, int]:
    """(type name, primary key) of a global id; BadUserInput when it is not one of ours."""
    try:
        type_name, _, number = _b64decode(gid).decode("ascii").partition(":")
        pk = int(number)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise BadUserInput(f"not a valid id: {gid[:64]!r}") from None
    if type_name not in NODE_TYPES or not 0 < pk <= _MAX_ID or number != str(pk):
        raise BadUserInput(f"not a valid id: {gid[:64]!r}")
    return type_name, pk


def pk_of(gid: str, type_name: str) -> int:
    """The primary key of a global id that must name a `type_name` (an id of another type: BadUserInput)."""
    found, pk = from_global(gid)
    if found != type_name:
        raise BadUserInput(f"expected an id of a {type_name}")
    return pk


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


def encode_cursor(values: Sequence[Any]) -> str:
    return _b64encode(json.dumps([_jsonable(v) for v in values], separators=(",", ":")).encode())


def decode_cursor(cursor: str, arity: int) -> tuple[Any, ...]:
    try:
        values = json.loads(_b64decode(cursor))
        if not isinstance(values, list) or len(values) != arity:
            raise ValueError("wrong arity")
        return tuple(_unjson(v) for v in values)
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise BadUserInput("not a valid cursor") from None
