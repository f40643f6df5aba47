"""Filter inputs and the SQL conditions they become (the search box's operators become the same conditions:
gateway.graphql.search).

Address filters match a substring of any name or address in the JSON list (JSON_SEARCH walks the values,
never the keys). Ids of other accounts' folders or labels simply match nothing: they read like missing ids.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import strawberry
from sqlalchemy import ColumnElement, exists, func, literal, or_, select
from sqlalchemy.orm import QueryableAttribute
from strawberry.schema.config import StrawberryConfig
from strawberry.types.arguments import InputContext
from strawberry.types.base import StrawberryOptional

from gateway.errors import BadUserInput
from gateway.ids import pk_of
from schema.models import Message, MessageLabel, MessagePlace, Thread

MAX_NEEDLE = 200
T = TypeVar("T")
# Scalars whose input value graphql-core has already coerced to the value Strawberry passes on unchanged.
LEAVES: tuple[object, ...] = (str, bool, int, float, datetime, strawberry.ID)


def _naive_utc(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo is not None else value


def _like_pattern(needle: str) -> str:
    if not needle or len(needle) > MAX_NEEDLE:
        raise BadUserInput(f"a filter text must have 1 to {MAX_NEEDLE} characters")
    escaped = needle.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def address_matches(column: Any, needle: str) -> ColumnElement[bool]:
    return func.json_search(func.lower(column), literal("one"), literal(_like_pattern(needle))).is_not(None)


def text_contains(column: QueryableAttribute[str], needle: str) -> ColumnElement[bool]:
    return column.like(_like_pattern(needle), escape="\\")


def of_leaves(cls: type[T]) -> type[T]:
    """An input type whose fields are all nullable scalars, built from its input value directly.

    Strawberry converts an input value field by field (`convert_argument`: the optional, then the scalar, each
    a call with its checks), and graphql-core fills every field a client left out with its null default: a
    search's filter took 26 of its request's 38 conversions. Scalars need no conversion (graphql-core's
    coercion made them, and reported bad values as typed errors before any resolver ran), so the input
    value's fields are passed to the class as they are: the same value the conversion made. Types whose fields
    are not all such scalars are refused here, when the module is imported."""
    definition = cls.__strawberry_definition__  # type: ignore[attr-defined]
    for f in definition.fields:
        if not isinstance(f.type, StrawberryOptional) or f.type.of_type not in LEAVES:
            raise TypeError(f"{cls.__name__}.{f.python_name} is not a nullable scalar")
    names: dict[int, tuple[StrawberryConfig, tuple[tuple[str, str], ...]]] = {}

    def from_input(target: type[T], value: Mapping[str, Any], context: InputContext) -> T:
        config = context.config
        known = names.get(id(config))
        if known is None or known[0] is not config:
            convert = config.name_converter.from_field
            known = names[id(config)] = (config, tuple((convert(f), f.python_name) for f in definition.fields))
        return target(**{python: value[name] for name, python in known[1] if name in value})

    definition.from_input = from_input
    return cls


@of_leaves
@strawberry.input(description="Conditions on messages; all given conditions must hold.")
class MessageFilter:
    folder_id: strawberry.ID | None = None
    label_id: strawberry.ID | None = None
    thread_id: strawberry.ID | None = None
    unread: bool | None = None
    starred: bool | None = None
    has_attachment: bool | None = None
    from_: str | None = strawberry.field(name="from", default=None, description="Substring of a From name or address.")
    to: str | None = None
    cc: str | None = None
    address: str | None = strawberry.field(default=None, description="Substring of any From, To, Cc or Bcc.")
    subject: str | None = strawberry.field(default=None, description="Substring of the subject (any case).")
    received_after: datetime | None = None
    received_before: datetime | None = None


@of_leaves
@strawberry.input(description="Conditions on threads; all given conditions must hold.")
class ThreadFilter:
    folder_id: strawberry.ID | None = None
    label_id: strawberry.ID | None = None
    unread: bool | None = None
    starred: bool | None = None
    has_attachment: bool | None = None
    participant: str | None = strawberry.field(
        default=None, description="Substring of a participant's name or address."
    )
    subject: str | None = None
    received_after: datetime | None = strawberry.field(default=None, description="Last message after this time.")
    received_before: datetime | None = strawberry.field(default=None, description="Last message before this time.")


F = TypeVar("F", MessageFilter, ThreadFilter)


@dataclass(frozen=True, slots=True)
class FilterKey(Generic[F]):
    """A filter input as part of a cache key (a statement kept per filter): its values, every field's a str,
    bool, time or None (`of_leaves` makes sure), and the input itself, which the key does not compare."""

    key: tuple[Any, ...] | None
    filter: F | None = field(compare=False, hash=False)

    @classmethod
    def of(cls, f: F | None) -> FilterKey[F]:
        return cls(None if f is None else tuple(getattr(f, x.name) for x in dataclasses.fields(f)), f)


def message_conditions(f: MessageFilter | None) -> list[ColumnElement[bool]]:
    if f is None:
        return []
    found: list[ColumnElement[bool]] = []
    if f.folder_id is not None:
        folder = pk_of(f.folder_id, "Folder")
        found.append(exists(select(1).where(MessagePlace.message_id == Message.id, MessagePlace.folder_id == folder)))
    if f.label_id is not None:
        label = pk_of(f.label_id, "Label")
        found.append(exists(select(1).where(MessageLabel.message_id == Message.id, MessageLabel.label_id == label)))
    if f.thread_id is not None:
        found.append(Message.thread_id == pk_of(f.thread_id, "Thread"))
    if f.unread is not None:
        found.append(Message.unread.is_(f.unread))
    if f.starred is not None:
        found.append(Message.starred.is_(f.starred))
    if f.has_attachment is not None:
        found.append(Message.has_attachments.is_(f.has_attachment))
    if f.from_ is not None:
        found.append(address_matches(Message.from_addrs, f.from_))
    if f.to is not None:
        found.append(address_matches(Message.to_addrs, f.to))
    if f.cc is not None:
        found.append(address_matches(Message.cc_addrs, f.cc))
    if f.address is not None:
        groups = (Message.from_addrs, Message.to_addrs, Message.cc_addrs, Message.bcc_addrs)
        found.append(or_(*(address_matches(g, f.address) for g in groups)))
    if f.subject is not None:
        found.append(text_contains(Message.subject, f.subject))
    if f.received_after is not None:
        found.append(Message.received_at > _naive_utc(f.received_after))
    if f.received_before is not None:
        found.append(Message.received_at < _naive_utc(f.received_before))
    return found


def thread_conditions(f: ThreadFilter | None) -> list[ColumnElement[bool]]:
    if f is None:
        return []
    found: list[ColumnElement[bool]] = []
    if f.folder_id is not None:
        folder = pk_of(f.folder_id, "Folder")
        found.append(func.json_contains(Thread.folder_ids, literal(str(folder))) == 1)
    if f.label_id is not None:
        label = pk_of(f.label_id, "Label")
        found.append(func.json_contains(Thread.label_ids, literal(str(label))) == 1)
    if f.unread is not None:
        found.append(Thread.unread_count > 0 if f.unread else Thread.unread_count == 0)
    if f.starred is not None:
        found.append(Thread.starred.is_(f.starred))
    if f.has_attachment is not None:
        has = exists(
            select(1).where(
                Message.thread_id == Thread.id, Message.has_attachments.is_(True), Message.orphaned_at.is_(None)
            )
        )
        found.append(has if f.has_attachment else ~has)
    if f.participant is not None:
        found.append(address_matches(Thread.participants, f.participant))
    if f.subject is not None:
        found.append(text_contains(Thread.subject, f.subject))
    if f.received_after is not None:
        found.append(Thread.last_message_at > _naive_utc(f.received_after))
    if f.received_before is not None:
        found.append(Thread.last_message_at < _naive_utc(f.received_before))
    return found
