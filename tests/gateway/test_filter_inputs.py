"""Filter inputs built from their input values directly (gateway.graphql.filters.of_leaves): the same objects as
Strawberry's field-by-field conversion, the same answers, and bad values still typed errors, never INTERNAL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import strawberry
from strawberry.types.arguments import convert_argument

from gateway.errors import BAD_USER_INPUT
from gateway.graphql.filters import MessageFilter, ThreadFilter, of_leaves
from gateway.graphql.schema import build_schema
from gateway.ids import to_global
from gateway.testing import Client, World

MESSAGE_VALUE = {
    "folderId": "Rm9sZGVyOjE",
    "labelId": "TGFiZWw6Mg",
    "threadId": None,
    "unread": True,
    "starred": False,
    "hasAttachment": None,
    "from": "partner",
    "to": "bob",
    "cc": None,
    "address": "carol@example.test",
    "subject": "100%_",
    "receivedAfter": datetime(2026, 3, 1, 8, 30, tzinfo=UTC),
    "receivedBefore": None,
}
THREAD_VALUE = {
    "folderId": None,
    "labelId": "TGFiZWw6Mg",
    "unread": False,
    "starred": True,
    "hasAttachment": True,
    "participant": "jm@example",
    "subject": "half a",
    "receivedAfter": None,
    "receivedBefore": datetime(2026, 3, 2, tzinfo=UTC),
}


def _convert(value: dict[str, Any], type_: type, stock: bool, monkeypatch: pytest.MonkeyPatch) -> Any:
    schema = build_schema()
    definition = type_.__strawberry_definition__  # type: ignore[attr-defined]
    if stock:
        monkeypatch.setattr(definition, "from_input", None)
    return convert_argument(value, type_, schema.schema_converter.scalar_registry, schema.config)


@pytest.mark.parametrize(
    ("type_", "value"),
    [
        (MessageFilter, MESSAGE_VALUE),
        (MessageFilter, {"unread": True}),
        (MessageFilter, {}),
        (ThreadFilter, THREAD_VALUE),
        (ThreadFilter, {"participant": "x"}),
    ],
)
def test_a_filter_is_built_as_strawberry_builds_it(
    type_: type, value: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    ours = _convert(value, type_, False, monkeypatch)
    stock = _convert(value, type_, True, monkeypatch)
    if "from" in value:
        assert ours.from_ == "partner"  # the GraphQL name `from` is the attribute `from_`
    assert type(ours) is type_
    assert ours == stock


def test_only_inputs_of_nullable_scalars_are_built_directly() -> None:
    @strawberry.input
    class Nested:
        inner: MessageFilter | None = None

    with pytest.raises(TypeError, match=r"Nested\.inner"):
        of_leaves(Nested)

    @strawberry.input
    class Required:
        name: str

    with pytest.raises(TypeError, match=r"Required\.name"):
        of_leaves(Required)


SEARCH = """query($a: ID!, $f: MessageFilter) {
    search(accountId: $a, query: "quarterly", filter: $f) { nodes { subject } } }"""
THREADS = """query($a: ID!, $f: ThreadFilter) { threads(accountId: $a, filter: $f) { nodes { subject } } }"""


@pytest.mark.parametrize(
    ("query", "f"),
    [
        (SEARCH, {"receivedAfter": "yesterday"}),
        (SEARCH, {"unread": "yes"}),
        (SEARCH, {"folderId": "not an id"}),
        (SEARCH, {"labelId": to_global("Folder", 1)}),
        (SEARCH, {"nope": True}),
        (SEARCH, {"from": ""}),
        (SEARCH, {"subject": "x" * 201}),
        (SEARCH, "not an object"),
        (THREADS, {"receivedBefore": 3}),
        (THREADS, {"participant": ["a", "b"]}),
    ],
)
async def test_bad_filter_values_are_typed_errors(alice: Client, world: World, query: str, f: Any) -> None:
    answer = await alice.run(query, {"a": to_global("Account", world.alice.id), "f": f})
    assert [e["extensions"]["code"] for e in answer["errors"]] == [BAD_USER_INPUT], answer


@pytest.mark.parametrize("literal", ['{unread: "yes"}', '{receivedAfter: "soon"}', "{nope: true}", '{from: ["a"]}'])
async def test_bad_filter_literals_are_typed_errors(alice: Client, world: World, literal: str) -> None:
    query = f"""query($a: ID!) {{ search(accountId: $a, query: "quarterly", filter: {literal}) {{ totalCount }} }}"""
    answer = await alice.run(query, {"a": to_global("Account", world.alice.id)})
    assert [e["extensions"]["code"] for e in answer["errors"]] == [BAD_USER_INPUT], answer


async def test_every_filter_field_given_as_a_variable_reaches_the_query(alice: Client, world: World) -> None:
    """Each field, null or not: the filter finds what the literal filter finds."""
    a = to_global("Account", world.alice.id)
    for name, literal, value in (
        ("unread", "true", True),
        ("from", '"PARTNER"', "PARTNER"),
        ("subject", '"re: quarterly"', "re: quarterly"),
        ("to", '"bob@partner"', "bob@partner"),
        ("receivedAfter", '"2030-01-01T00:00:00+01:00"', "2030-01-01T00:00:00+01:00"),
    ):
        given = {k: None for k in MESSAGE_VALUE} | {name: value}
        by_variable = await alice.data(SEARCH, {"a": a, "f": given})
        by_literal = await alice.data(
            f"""query($a: ID!) {{ search(accountId: $a, query: "quarterly", filter: {{{name}: {literal}}}) {{
                nodes {{ subject }} }} }}""",
            {"a": a},
        )
        everything = await alice.data(SEARCH, {"a": a, "f": None})
        assert by_variable == by_literal, name
        assert len(by_variable["search"]["nodes"]) < len(everything["search"]["nodes"]), name
