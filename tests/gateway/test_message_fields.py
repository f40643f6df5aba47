"""A message's fields made from its row when first read (gateway.graphql.types.messages.Message.of): the same
values as before, each made once, and every plain field covered."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.graphql.types.messages import _MESSAGE_FIELDS, Message
from gateway.ids import to_global
from gateway.testing import Client, World

COLUMNS: dict[str, Any] = {
    "id": 42,
    "subject": "Quarterly report",
    "date": datetime(2026, 3, 1, 9, 30),
    "received_at": datetime(2026, 3, 1, 9, 31),
    "unread": 1,
    "starred": 0,
    "answered": 1,
    "draft": 0,
    "snippet": "Numbers attached",
    "size": 1234,
    "message_id_header": "<q@example.test>",
    "in_reply_to": None,
    "references": "<a@x> <b@x>",
    "has_attachments": 1,
    "malformed": 0,
    "defects": None,
}
EXPECTED: dict[str, Any] = {
    "id": to_global("Message", 42),
    "subject": "Quarterly report",
    "date": datetime(2026, 3, 1, 9, 30, tzinfo=UTC),
    "received_at": datetime(2026, 3, 1, 9, 31, tzinfo=UTC),
    "unread": True,
    "starred": False,
    "answered": True,
    "draft": False,
    "snippet": "Numbers attached",
    "size": 1234,
    "message_id_header": "<q@example.test>",
    "in_reply_to": None,
    "references": ["<a@x>", "<b@x>"],
    "has_attachments": True,
    "malformed": False,
    "defects": [],
}


class Columns(Mapping[str, Any]):
    """A row's mapping that records the columns read."""

    def __init__(self, columns: dict[str, Any]) -> None:
        self.columns = columns
        self.read: list[str] = []

    def __getitem__(self, key: str) -> Any:
        self.read.append(key)
        return self.columns[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.columns)

    def __len__(self) -> int:
        return len(self.columns)


@dataclasses.dataclass
class FakeRow:
    _mapping: Columns


def test_a_message_makes_its_fields_from_its_row_when_read() -> None:
    row = FakeRow(Columns(dict(COLUMNS)))
    message = Message.of(row)  # type: ignore[arg-type]
    assert row._mapping.read == ["id"]
    assert message.row is row  # type: ignore[comparison-overlap]
    for name, value in EXPECTED.items():
        assert getattr(message, name) == value, name
        assert getattr(message, name) == value, name  # kept: read again without the row
    assert sorted(row._mapping.read) == sorted(COLUMNS)


def test_every_plain_field_of_a_message_is_made_from_its_row() -> None:
    """A field without a resolver that Message.of does not make would be missing: INTERNAL when asked for."""
    definition = Message.__strawberry_definition__  # type: ignore[attr-defined]
    plain = {f.python_name for f in definition.fields if f.base_resolver is None} - {"row"}
    assert plain - {"id"} == set(_MESSAGE_FIELDS)
    assert set(EXPECTED) == plain


def test_what_a_message_does_not_have_is_an_attribute_error() -> None:
    message = Message.of(FakeRow(Columns(dict(COLUMNS))))  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        message.nothing  # type: ignore[attr-defined]  # noqa: B018
    assert not hasattr(message, "nothing")


async def test_every_field_of_a_message_answers(alice: Client, world: World) -> None:
    query = """query($a: ID!) { messages(accountId: $a, first: 100) { nodes {
        id subject date receivedAt unread starred answered draft snippet size messageIdHeader inReplyTo references
        hasAttachments malformed defects from { address } to { address } } } }"""
    nodes = (await alice.data(query, {"a": to_global("Account", world.alice.id)}))["messages"]["nodes"]
    assert nodes
    assert all(n["receivedAt"] and n["id"] and isinstance(n["references"], list) for n in nodes)
    assert any(n["hasAttachments"] for n in nodes)
    assert any(n["unread"] for n in nodes)
