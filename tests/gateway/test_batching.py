"""DataLoaders: the statements a query runs follow its shape, never its page size."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.graphql.loaders import Loaders, Reader
from gateway.ids import to_global
from gateway.testing import Client, ServerThread, World
from schema.models import Thread

PAGE_OF_THREADS = """query($a: ID!, $n: Int!) { threads(accountId: $a, first: $n) { edges { cursor node {
    id subject snippet unread starred lastMessageAt participants { name address }
    labels { id name } folders { id name role }
    lastMessage { id subject date from { name address } to { address } unread
        attachments { filename contentType size } folders { name } labels { name } }
} } pageInfo { hasNextPage endCursor } } }"""


# The gateway's own background work runs on the same engine (the webhook deliverer polls its due hooks,
# subscribers re-read the change log): its statements are not the query's.
BACKGROUND = ("webhooks", "webhook_deliveries", "change_log", "change_seq")


class Statements:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not any(f"FROM {table}" in statement or f"UPDATE {table}" in statement for table in BACKGROUND):
            self.seen.append(statement)


@pytest.fixture
def statements(gateway: ServerThread) -> Iterator[Statements]:
    counter = Statements()
    engine = gateway.app.state.services.engine.sync_engine
    event.listen(engine, "before_cursor_execute", counter)
    yield counter
    event.remove(engine, "before_cursor_execute", counter)


async def count(client: Client, statements: Statements, query: str, variables: dict[str, Any]) -> tuple[int, Any]:
    """The fewest statements of three runs of the query, after a warm-up (the token's grant is cached after its
    first use): a run that also re-read the token (its cache period ran out on a slow machine) or met another
    socket's token check counts more, never fewer, so the fewest is the query's own."""
    await client.data(query, variables)
    fewest: list[str] | None = None
    for _ in range(3):
        statements.seen.clear()
        data = await client.data(query, variables)
        if fewest is None or len(statements.seen) < len(fewest):
            fewest = list(statements.seen)
    assert fewest is not None
    statements.seen[:] = fewest
    return len(fewest), data


async def test_a_page_of_threads_costs_the_same_statements_at_any_size(
    alice: Client, world: World, statements: Statements
) -> None:
    account = to_global("Account", world.alice.id)
    counts = {}
    for n in (1, 10, 50):
        counts[n], data = await count(alice, statements, PAGE_OF_THREADS, {"a": account, "n": n})
        assert len(data["threads"]["edges"]) == n
        assert all(e["node"]["lastMessage"] for e in data["threads"]["edges"])
    # threads, thread labels, thread folders, last messages, their attachments, folders and labels, and the
    # folder and label rows behind the messages' ids: one statement each, whatever the page size (the first
    # thread alone has no labels, so its page skips the label statements).
    assert counts[10] == counts[50] <= 8, statements.seen
    assert counts[1] <= counts[50]


async def test_nested_connections_batch_across_parents(alice: Client, world: World, statements: Statements) -> None:
    query = """query($a: ID!, $n: Int!) { threads(accountId: $a, first: $n) { nodes {
        messages(first: 2) { totalCount nodes { subject textBody attachments { filename } } pageInfo { hasNextPage } }
    } } }"""
    account = to_global("Account", world.alice.id)
    small, _ = await count(alice, statements, query, {"a": account, "n": 5})
    large, data = await count(alice, statements, query, {"a": account, "n": 50})
    assert small == large <= 4, statements.seen
    assert sum(t["messages"]["totalCount"] for t in data["threads"]["nodes"]) >= 50


async def test_newest_messages_are_read_only_from_the_viewers_accounts(gw_engine: AsyncEngine, world: World) -> None:
    """The last-messages loader runs one statement built once for every request: the threads and the viewer's
    accounts are its parameters, so each request's accounts scope it (another account's thread loads as None)."""
    async with gw_engine.connect() as conn:
        rows = (await conn.execute(select(Thread.id, Thread.account_id).where(Thread.message_count > 0))).all()
    mine = [r.id for r in rows if r.account_id == world.alice.id]
    theirs = [r.id for r in rows if r.account_id == world.bob.id]
    assert mine
    assert theirs
    for accounts, expected in (({world.alice.id}, mine), ({world.bob.id}, theirs), (set(), [])):
        db = Reader(gw_engine)
        try:
            found = await Loaders(db, frozenset(accounts)).last_messages.load_many(mine + theirs)
        finally:
            await db.close()
        got = [thread for thread, row in zip(mine + theirs, found, strict=True) if row is not None]
        assert got == expected
        assert all(row.thread_id == thread for thread, row in zip(mine + theirs, found, strict=True) if row)


async def test_message_reads_leave_out_what_the_api_never_shows(
    alice: Client, world: World, statements: Statements
) -> None:
    """The messages of a page are read without the search index's copy of their addresses, the mirror's
    identity and orphan time (no field shows them), and every address list still answers."""
    query = """query($a: ID!) { threads(accountId: $a, first: 5) { nodes { folders { id } lastMessage {
        from { address } to { address } cc { address } bcc { address } replyTo { address } } } }
        messages(accountId: $a, first: 5) { nodes { subject to { name address } } } }"""
    _, data = await count(alice, statements, query, {"a": to_global("Account", world.alice.id)})
    messages = [t["lastMessage"] for t in data["threads"]["nodes"]] + data["messages"]["nodes"]
    assert all(m["to"] and all(a["address"] for a in m["to"]) for m in messages)
    assert all(t["folders"] for t in data["threads"]["nodes"])
    read = " ".join(s for s in statements.seen if "FROM messages" in s)
    assert "messages.subject" in read
    for column in ("search_addresses", "identity"):
        assert f"messages.{column}" not in read, read
