"""The executor's short path for plain fields (gateway.graphql.executor): the same answers and errors as
graphql-core's path, and taken by the plain columns of a real page."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import replace
from enum import Enum
from functools import cache
from typing import Any

import pytest
import strawberry
from graphql import GraphQLObjectType, GraphQLResolveInfo
from graphql.pyutils import Path
from strawberry.dataloader import DataLoader
from strawberry.extensions import ParserCache, SchemaExtension
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.types.unset import UNSET

from gateway.graphql.executor import PlainFieldExecutor
from gateway.graphql.types.fields import field_of
from gateway.ids import to_global
from gateway.testing import Client, World
from tests.gateway.test_batching import PAGE_OF_THREADS


class Colour(Enum):
    RED = "red"
    GREEN = "green"


@strawberry.type
class Owner:
    name: str

    @strawberry.field
    async def later(self) -> str:
        await asyncio.sleep(0)
        return self.name

    @strawberry.field
    def boom(self) -> str:
        raise ValueError(f"no boom for {self.name}")

    @strawberry.field
    def soft(self) -> str | None:
        raise ValueError(f"no soft for {self.name}")

    @strawberry.field
    async def later_boom(self) -> str:
        await asyncio.sleep(0)
        raise ValueError(f"no later boom for {self.name}")


@strawberry.interface
class Thing:
    label: str


@strawberry.type
class Pet(Thing):
    """Implements an interface: Strawberry checks its objects at run time (an isinstance check)."""

    owner: Owner


@strawberry.type
class Tag:
    """Checks its objects with a check of its own (`is_type_of`), which the short path leaves to graphql-core."""

    word: str

    @classmethod
    def is_type_of(cls, obj: Any, info: GraphQLResolveInfo[Any]) -> bool:
        return isinstance(obj, Tag) and obj.word != "forged" and info.field_name == "tagsOf"  # reads the info


@strawberry.type
class Item:
    name: str
    note: str | None
    count: int
    colour: Colour
    tags: list[str]
    when: float
    owner: Owner
    friends: list[Owner]
    maybe: list[Owner | None] | None
    pet: Pet | None = None
    pets: list[Pet] = strawberry.field(default_factory=list)
    tags_of: list[Tag] = strawberry.field(default_factory=list)

    # What a list resolver may have loaded for the whole page (field_of's prefetched), UNSET when it did not.
    best: strawberry.Private[Any] = UNSET
    pals: strawberry.Private[Any] = UNSET

    @strawberry.field
    def shout(self, times: int = 1) -> str:
        return self.name.upper() * times

    @strawberry.field
    def loud(self) -> str:  # reads only the object: the executor calls it directly
        return self.name.upper()

    @strawberry.field
    def everyone(self) -> list[Owner]:
        return [self.owner, *self.friends]

    @strawberry.field
    def careful(self, info: strawberry.Info) -> str:  # reads the info: graphql-core's path
        return f"{info.field_name}:{self.name}"

    @field_of(Owner | None, prefetched=("best", UNSET))
    def best_friend(self) -> Owner | Awaitable[Owner | None] | None:
        return self.best if self.best is not UNSET else self._later(self.friends[0] if self.friends else None)

    @field_of(list[Owner], prefetched=("pals", UNSET))
    def pals_of(self) -> list[Owner] | Awaitable[list[Owner]]:
        return self.pals if self.pals is not UNSET else self._later(list(reversed(self.friends)))

    @staticmethod
    async def _later(value: Any) -> Any:
        await asyncio.sleep(0)
        return value


ANN, BOB = Owner(name="ann"), Owner(name="bob")
GOOD = Item(
    name="a",
    note=None,
    count=3,
    colour=Colour.GREEN,
    tags=["x"],
    when=1.5,
    owner=ANN,
    friends=[ANN, BOB],
    maybe=[None, BOB],
    pet=Pet(label="rex", owner=ANN),
    pets=[Pet(label="rex", owner=ANN), Pet(label="tom", owner=BOB)],
    tags_of=[Tag(word="x")],
)
# What a bug of ours could hand the API: a null where the type forbids it, values that do not coerce.
BROKEN = Item(
    name=None,  # type: ignore[arg-type]
    note=None,
    count="many",  # type: ignore[arg-type]
    colour="blue",  # type: ignore[arg-type]
    tags=["y"],
    when=2.0,
    owner=None,  # type: ignore[arg-type]
    friends=[ANN, None],  # type: ignore[list-item]
    maybe="nope",  # type: ignore[arg-type]
    pet=ANN,  # type: ignore[arg-type]  # not a Pet: its check fails
    pets=[Pet(label="rex", owner=ANN), BOB],  # type: ignore[list-item]
    tags_of=[Tag(word="forged")],
)
WIDE = Item(
    name="w", note="n", count=2**40, colour=Colour.RED, tags=[], when=float("nan"), owner=BOB, friends=[], maybe=None
)


@strawberry.type
class Query:
    @strawberry.field
    def items(self) -> list[Item]:
        return [GOOD, WIDE]

    @strawberry.field
    def broken(self) -> Item | None:
        return BROKEN

    @strawberry.field
    def first(self) -> Item:
        return GOOD

    @strawberry.field
    def mixed(self) -> list[Item | None]:
        """A list whose items are all plain but one holds what the short path hands to graphql-core's."""
        holes = replace(GOOD, friends=[ANN, None])  # type: ignore[list-item]
        return [GOOD, holes, None, replace(WIDE, owner=BOB), replace(GOOD, tags=None)]  # type: ignore[arg-type]

    @strawberry.field
    def prefetched(self) -> list[Item]:
        """Items whose list resolver loaded best and pals (and one with a value of the wrong type)."""
        return [
            replace(GOOD, best=BOB, pals=[BOB, ANN]),
            replace(WIDE, best=None, pals=[]),
            replace(GOOD, best=Pet(label="rex", owner=ANN), pals=[ANN, None]),
            GOOD,  # not prefetched: the resolvers answer
        ]


class Upper(SchemaExtension):
    """Wraps every resolver, as graphql middleware: plain fields must run through it too."""

    def resolve(self, _next: Any, root: Any, info: GraphQLResolveInfo[Any], *args: Any, **kwargs: Any) -> Any:
        value = _next(root, info, *args, **kwargs)
        return value.upper() if isinstance(value, str) else value


@cache
def schemas(*extensions: Any) -> tuple[strawberry.Schema, strawberry.Schema]:
    """Built once per set of extensions: a schema is thousands of objects, and each query below runs on both.
    Ours caches parsed documents, as the gateway's does: its executions of a document share their renders."""
    stock = strawberry.Schema(query=Query, extensions=list(extensions))
    ours = strawberry.Schema(
        query=Query, extensions=[ParserCache, *extensions], execution_context_class=PlainFieldExecutor
    )
    return stock, ours


@pytest.mark.parametrize(
    "query",
    [
        "{ items { name note count colour tags when shout } }",
        "{ items { name ...F } } fragment F on Item { count note }",
        "{ items { n: name name colour __typename } first { shout(times: 2) count } }",
        "{ broken { name } }",
        "{ broken { count } }",
        "{ broken { colour } }",
        "{ broken { note tags when } }",
        "{ first { name } broken { name count colour } }",
        "{ items { count } }",  # 2**40 does not fit GraphQL's Int
        "{ items { when } }",  # nor NaN its Float
        "{ items { owner { name later } friends { name later } maybe { name later } } }",
        "{ items { friends { soft name } maybe { boom } } }",  # errors null the nearest nullable place
        "{ items { name friends { boom } } }",  # ... up to the list of items
        "{ items { owner { later_boom: laterBoom } } }",
        "{ items { maybe { laterBoom } friends { later } } }",
        "{ first { friends { laterBoom } } broken { name } }",
        "{ broken { owner { name } } }",
        "{ broken { friends { name later } } }",
        "{ broken { maybe { name } } }",
        "{ items { pet { label owner { name } } pets { label owner { name later } } tagsOf { word } } }",
        "{ broken { pet { label } } }",  # an object that is not of the field's type
        "{ broken { pets { label } } }",
        "{ broken { tagsOf { word } } first { tagsOf { word } } }",
        "{ items { pet { ... on Thing { label } ... on Pet { owner { name } } } } }",
        "{ items { s: name, s2: name, c: colour, n: note, t: __typename, h: shout } }",
        "{ items { bestFriend { name later } palsOf { name } } }",
        "{ items { loud everyone { name boom } careful } }",
        "{ broken { loud } }",  # raises (a null name): reported as graphql-core reports it
        "{ broken { everyone { name } } }",  # a null owner in a list of non-null owners
        "{ prefetched { name bestFriend { name later } palsOf { name boom } } }",
        "{ prefetched { palsOf { name } } }",
        # Selections plain down to their leaves (each object answered by one render), with what the render does
        # not answer somewhere inside: that object takes graphql-core's path, and only it.
        "{ mixed { name __typename owner { name __typename } friends { name } pets { label owner { name } } } }",
        "{ mixed { tags } }",
        "{ mixed { friends { n: name name } } items { owner { name } pet { label } } }",
        "{ broken { friends { name } maybe { name } } }",
        "{ broken { owner { name } pet { label } } first { owner { name } } }",
        "{ items { ...P } broken { ...P } } fragment P on Item { pets { owner { name } } pet { owner { name } } }",
    ],
)
@pytest.mark.parametrize("extensions", [[], [Upper]], ids=["plain", "with-middleware"])
async def test_plain_fields_answer_as_graphql_core_does(query: str, extensions: list[Any]) -> None:
    stock, ours = schemas(*extensions)
    expected = await stock.execute(query)
    for _ in range(2):  # the second execution runs the renders the first one made
        got = await ours.execute(query)
        assert got.data == expected.data
        assert errors(got) == errors(expected)


def errors(result: Any) -> list[tuple[str, str, str]]:
    return sorted((e.message, repr(e.path), repr(e.locations)) for e in result.errors or ())


@pytest.fixture
def renders_made(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The renders the executor makes, by the name of their object type."""
    made: list[str] = []
    original = PlainFieldExecutor._make_render

    def counting(self: Any, object_type: GraphQLObjectType, fields: Any) -> Any:
        made.append(object_type.name)
        return original(self, object_type, fields)

    monkeypatch.setattr(PlainFieldExecutor, "_make_render", counting)
    return made


async def test_the_executions_of_a_document_share_its_renders(renders_made: list[str]) -> None:
    _, ours = schemas()
    query = (
        "{ items { name owner { name } pets { label owner { name } } } first { ...F } } fragment F on Item { count }"
    )
    first = await ours.execute(query)
    assert not first.errors
    assert sorted(renders_made) == ["Item", "Item", "Owner", "Owner", "Pet"]
    renders_made.clear()
    again = await ours.execute(query)
    assert again.data == first.data
    assert renders_made == []
    # Another document of the same selections makes its own (a render is kept with its document's nodes).
    await ours.execute(query + " ")
    assert len(renders_made) == 5


@pytest.mark.parametrize(
    "query",
    [
        "query($x: Boolean!) { items { name owner @include(if: $x) { name } friends { name @skip(if: $x) later } } }",
        "query($x: Boolean!) { items { name ... on Item @include(if: $x) { count owner { name } } } }",
        "query($x: Boolean!) { items { name ...F @skip(if: $x) } } fragment F on Item { colour owner { name } }",
        "query($x: Boolean!) { items { name ...F } } fragment F on Item { colour @include(if: $x) }",
    ],
)
async def test_selections_that_vary_with_the_variables_follow_each_executions(
    query: str, renders_made: list[str]
) -> None:
    """A directive makes a selection depend on the variables: such an operation's renders are made per execution,
    never shared between executions with other values."""
    stock, ours = schemas()
    for x in (True, False, True, False):
        expected = await stock.execute(query, variable_values={"x": x})
        got = await ours.execute(query, variable_values={"x": x})
        assert got.data == expected.data, x
        assert errors(got) == errors(expected)
    made = len(renders_made)
    await ours.execute(query, variable_values={"x": True})
    assert len(renders_made) > made


@pytest.fixture
def resolve_infos(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The fields graphql-core builds a resolve info for (its field machinery), as Type.field."""
    built: list[str] = []
    original = StrawberryGraphQLCoreExecutionContext.build_resolve_info

    def counting(self: Any, field_def: Any, nodes: Any, parent_type: GraphQLObjectType, path: Path) -> Any:
        built.append(f"{parent_type.name}.{nodes[0].name.value}")
        return original(self, field_def, nodes, parent_type, path)

    monkeypatch.setattr(StrawberryGraphQLCoreExecutionContext, "build_resolve_info", counting)
    return built


async def test_a_page_of_threads_reads_its_plain_fields_without_the_field_machinery(
    alice: Client, world: World, resolve_infos: list[str]
) -> None:
    account = to_global("Account", world.alice.id)
    data = await alice.data(PAGE_OF_THREADS, {"a": account, "n": 10})
    threads = [e["node"] for e in data["threads"]["edges"]]
    assert len(threads) == 10
    assert all(t["subject"] and t["lastMessage"]["id"] for t in threads)
    plain = {"Thread.id", "Thread.subject", "Thread.unread", "Message.date", "Address.name", "Label.name"}
    plain |= {"ThreadConnection.edges", "ThreadConnection.pageInfo", "Thread.participants", "Message.from"}
    assert not plain & set(resolve_infos)
    # An edge's node is a Thread, which implements Node: Strawberry's isinstance check, no resolve info.
    assert "ThreadEdge.node" not in resolve_infos
    # The page prefetched its threads' last messages and labels: read as they were loaded, no resolver called.
    assert "Thread.lastMessage" not in resolve_infos
    assert "Thread.labels" not in resolve_infos
    # What still takes it: the resolvers of the page's own (threads) and those not prefetched (folders).
    assert "Query.threads" in resolve_infos
    assert "Thread.folders" in resolve_infos


async def test_a_thread_read_alone_loads_what_a_page_prefetches(
    alice: Client, world: World, resolve_infos: list[str]
) -> None:
    """node(id:) prefetches nothing: the same fields call their resolvers, which load them."""
    account = to_global("Account", world.alice.id)
    page = await alice.data(PAGE_OF_THREADS, {"a": account, "n": 1})
    thread = page["threads"]["edges"][0]["node"]
    resolve_infos.clear()
    query = "query($id: ID!) { node(id: $id) { ... on Thread { lastMessage { id subject } labels { id name } } } }"
    alone = await alice.data(query, {"id": thread["id"]})
    assert alone["node"]["lastMessage"] == {k: thread["lastMessage"][k] for k in ("id", "subject")}
    assert alone["node"]["labels"] == thread["labels"]
    assert "Thread.lastMessage" in resolve_infos
    assert "Thread.labels" in resolve_infos


async def test_a_page_of_threads_renders_each_thread_in_one_call(
    alice: Client, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A selection plain down to its leaves is answered by one render per object: no object of the page goes
    through the loop over its fields (execute_fields), but the query's root."""
    executed: list[str] = []
    original = PlainFieldExecutor.execute_fields

    def counting(self: Any, parent_type: GraphQLObjectType, *args: Any) -> Any:
        executed.append(parent_type.name)
        return original(self, parent_type, *args)

    monkeypatch.setattr(PlainFieldExecutor, "execute_fields", counting)
    query = """query($a: ID!) { threads(accountId: $a, first: 10) { edges { cursor node {
        id subject unread lastMessageAt participants { name address } labels { id name } __typename
        lastMessage { id subject date unread from { name address } } } } pageInfo { hasNextPage endCursor } } }"""
    data = await alice.data(query, {"a": to_global("Account", world.alice.id)})
    threads = [e["node"] for e in data["threads"]["edges"]]
    assert len(threads) == 10
    assert all(t["subject"] and t["lastMessage"]["id"] and t["__typename"] == "Thread" for t in threads)
    assert executed == ["Query"]


async def test_a_page_prefetches_without_a_dataloader_load_per_thread(
    alice: Client, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page's last messages and labels are loaded by the loaders' batch functions called once each, without a
    future, a task and a cache entry per thread (DataLoader.load)."""
    loads: list[object] = []
    original = DataLoader.load

    def counting(self: Any, key: object) -> Any:
        loads.append(key)
        return original(self, key)

    monkeypatch.setattr(DataLoader, "load", counting)
    query = """query($a: ID!) { threads(accountId: $a, first: 10) { nodes {
        labels { name } lastMessage { subject from { address } } } } }"""
    data = await alice.data(query, {"a": to_global("Account", world.alice.id)})
    threads = data["threads"]["nodes"]
    assert len(threads) == 10
    assert all(t["lastMessage"]["subject"] for t in threads)
    assert any(t["labels"] for t in threads)
    assert loads == []
