"""Subscriptions over graphql-transport-ws, through real clients (Python's gql, npm's graphql-ws): replay from a
cursor then live, in order and each once; CURSOR_EXPIRED; tenancy; the convenience filters."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from gql import Client as GqlClient
from gql.graphql_request import GraphQLRequest
from gql.transport.exceptions import TransportQueryError
from gql.transport.websockets import WebsocketsTransport
from graphql import OperationType
from redis.asyncio import Redis
from sqlalchemy import event
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from gateway.testing import ServerThread, add_folder, deliver
from schema import changelog
from schema.crypto import CredentialBox
from schema.models import utcnow
from schema.unit import Store
from tests.conftest import REDIS_URL
from tests.gateway.test_changes import CURSOR, Fresh, fresh_account, mail

NODE_DIR = Path(__file__).parent / "node"
FOLLOW = """
subscription($acc: ID!, $after: String) {
  changes(accountId: $acc, after: $after) {
    cursor operation objectType objectId state
    object { __typename ... on Message { subject } }
  }
}"""


def seq_of(cursor: str) -> int:
    return int(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().rsplit(":", 1)[1])


def ws_url(gateway: ServerThread) -> str:
    return gateway.url.replace("http://", "ws://") + "/graphql"


def transport(gateway: ServerThread, token: str, connect_args: dict[str, Any] | None = None) -> WebsocketsTransport:
    return WebsocketsTransport(
        url=ws_url(gateway),
        init_payload={"authorization": f"Bearer {token}"},
        subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
        connect_args=connect_args or {},
    )


async def follow(gateway: ServerThread, token: str, query: str, variables: dict[str, Any]) -> AsyncIterator[Any]:
    async with GqlClient(transport=transport(gateway, token)) as session:
        async for result in session.subscribe(GraphQLRequest(query, variable_values=variables)):
            yield result


async def take(stream: AsyncIterator[Any], n: int, timeout: float = 15) -> list[Any]:
    out: list[Any] = []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            out.append(await anext(stream))
    return out


@pytest.fixture
async def fresh(gw_store: Store, credential_box: CredentialBox, http: httpx.AsyncClient) -> Fresh:
    return await fresh_account(gw_store, credential_box, http)


async def cursor_now(fresh: Fresh) -> str:
    cursor: str = (await fresh.client.data(CURSOR, {"acc": fresh.gid}))["changesCursor"]
    return cursor


async def test_changes_replay_after_the_cursor_then_follow_live(
    gateway: ServerThread, fresh: Fresh, gw_store: Store
) -> None:
    start = await cursor_now(fresh)
    await deliver(gw_store, fresh.id, fresh.inbox, [(mail("before 1"), []), (mail("before 2"), [])])
    backlog = seq_of(await cursor_now(fresh)) - seq_of(start)
    stream = follow(gateway, fresh.client.token or "", FOLLOW, {"acc": fresh.gid, "after": start})
    try:
        replayed = await take(stream, backlog)
        await deliver(gw_store, fresh.id, fresh.inbox, [(mail("live"), [])], first_uid=3)
        live_total = seq_of(await cursor_now(fresh)) - seq_of(start) - backlog
        live = await take(stream, live_total)
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    events = [r["changes"] for r in replayed + live]
    seqs = [seq_of(e["cursor"]) for e in events]
    assert seqs == list(range(seq_of(start) + 1, seq_of(start) + 1 + len(events)))
    subjects = [e["object"]["subject"] for e in events if e["objectType"] == "MESSAGE"]
    assert sorted(subjects[:2]) == ["before 1", "before 2"]
    assert subjects[2:] == ["live"]


async def test_without_a_cursor_a_subscriber_gets_only_what_comes_after(
    gateway: ServerThread, fresh: Fresh, gw_store: Store
) -> None:
    await deliver(gw_store, fresh.id, fresh.inbox, [(mail("old"), [])])
    stream = follow(gateway, fresh.client.token or "", FOLLOW, {"acc": fresh.gid})
    try:
        first = asyncio.ensure_future(take(stream, 3))
        await asyncio.sleep(0.5)  # the subscription is set up: it starts at the then newest cursor
        await deliver(gw_store, fresh.id, fresh.inbox, [(mail("new"), [])], first_uid=2)
        events = [r["changes"] for r in await first]
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    assert events[0]["objectType"] != "ACCOUNT"
    assert "old" not in [e["state"].get("subject") for e in events if e["state"]]


async def test_an_expired_cursor_ends_the_subscription_with_cursor_expired(
    gateway: ServerThread, fresh: Fresh, gw_store: Store
) -> None:
    old = await cursor_now(fresh)
    await deliver(gw_store, fresh.id, fresh.inbox, [(mail("x"), [])])
    await deliver(gw_store, fresh.id, fresh.inbox, [(mail("y"), [])], first_uid=2)
    async with gw_store.sessions() as session, session.begin():
        await changelog.expire(session, fresh.id, utcnow() + timedelta(days=1))
    stream = follow(gateway, fresh.client.token or "", FOLLOW, {"acc": fresh.gid, "after": old})
    with pytest.raises(TransportQueryError) as failed:
        await take(stream, 1)
    assert failed.value.errors is not None
    assert failed.value.errors[0]["extensions"]["code"] == "CURSOR_EXPIRED"


async def test_a_foreign_account_reads_like_a_missing_one(
    gateway: ServerThread, fresh: Fresh, gw_store: Store, credential_box: CredentialBox, http: httpx.AsyncClient
) -> None:
    other = await fresh_account(gw_store, credential_box, http)
    stream = follow(gateway, fresh.client.token or "", FOLLOW, {"acc": other.gid})
    with pytest.raises(TransportQueryError) as failed:
        await take(stream, 1)
    assert failed.value.errors is not None
    assert failed.value.errors[0]["extensions"]["code"] == "NOT_FOUND"


async def test_message_added_by_role_and_thread_updated(gateway: ServerThread, fresh: Fresh, gw_store: Store) -> None:
    start = await cursor_now(fresh)
    archive = await add_folder(gw_store, fresh.id, "Archive", "archive")
    await deliver(gw_store, fresh.id, archive, [(mail("archived"), [])])
    await deliver(gw_store, fresh.id, fresh.inbox, [(mail("inboxed"), [])])
    token = fresh.client.token or ""
    added = follow(
        gateway,
        token,
        'subscription($acc: ID!, $after: String) { messageAdded(accountId: $acc, role: "inbox", after: $after)'
        " { cursor message { subject folders { role } } } }",
        {"acc": fresh.gid, "after": start},
    )
    threads = follow(
        gateway,
        token,
        "subscription($acc: ID!, $after: String) { threadUpdated(accountId: $acc, after: $after)"
        " { cursor operation thread { subject } } }",
        {"acc": fresh.gid, "after": start},
    )
    try:
        [message] = await take(added, 1)
        updated = await take(threads, 2)
    finally:
        await added.aclose()  # type: ignore[attr-defined]
        await threads.aclose()  # type: ignore[attr-defined]
    assert message["messageAdded"]["message"]["subject"] == "inboxed"
    assert seq_of(message["messageAdded"]["cursor"]) > seq_of(start)
    assert sorted(u["threadUpdated"]["thread"]["subject"] for u in updated) == ["archived", "inboxed"]


async def test_folder_counts_and_sync_progress_carry_cursors(
    gateway: ServerThread, fresh: Fresh, gw_store: Store
) -> None:
    start = await cursor_now(fresh)
    await deliver(gw_store, fresh.id, fresh.inbox, [(mail("counted"), [])])
    token = fresh.client.token or ""
    counts = follow(
        gateway,
        token,
        "subscription($acc: ID!, $after: String) { folderCountsChanged(accountId: $acc, after: $after)"
        " { cursor folder { name messageCount unreadCount } } }",
        {"acc": fresh.gid, "after": start},
    )
    try:
        [event] = await take(counts, 1)
    finally:
        await counts.aclose()  # type: ignore[attr-defined]
    assert event["folderCountsChanged"]["folder"] == {"name": "INBOX", "messageCount": 1, "unreadCount": 1}
    assert seq_of(event["folderCountsChanged"]["cursor"]) > seq_of(start)


def node_ready(package: str = "graphql-ws") -> None:
    """The npm client `package` is installed in tests/gateway/node (from its lockfile)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail(f"the {package} client test needs Node.js and npm (Debian: apt-get install nodejs npm)")
    if not (NODE_DIR / "node_modules" / package).is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, timeout=300)


async def test_the_npm_graphql_ws_client_follows_changes(gateway: ServerThread, fresh: Fresh, gw_store: Store) -> None:
    node_ready()
    start = await cursor_now(fresh)
    await deliver(gw_store, fresh.id, fresh.inbox, [(mail("for node"), [])])
    backlog = seq_of(await cursor_now(fresh)) - seq_of(start)
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(NODE_DIR / "subscribe.mjs"),
        ws_url(gateway),
        fresh.client.token or "",
        FOLLOW,
        json.dumps({"acc": fresh.gid, "after": start}),
        str(backlog + 1),
        cwd=NODE_DIR,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    lines: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(30):
            lines.append(json.loads(await proc.stdout.readline()))  # ready
            for _ in range(backlog):
                lines.append(json.loads(await proc.stdout.readline()))
            await deliver(gw_store, fresh.id, fresh.inbox, [(mail("live for node"), [])], first_uid=2)
            lines.append(json.loads(await proc.stdout.readline()))
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    events = [line["data"]["changes"] for line in lines[1:]]
    assert [seq_of(e["cursor"]) for e in events] == list(range(seq_of(start) + 1, seq_of(start) + 1 + len(events)))
    assert events[-1]["objectType"] in ("MESSAGE", "THREAD", "FOLDER")
    subjects = [e["object"]["subject"] for e in events if e["objectType"] == "MESSAGE"]
    assert subjects == ["for node"]


async def test_subscribers_asking_the_same_share_one_render_of_each_event(
    gateway: ServerThread, fresh: Fresh, gw_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twelve subscribers at one cursor with one document: every one gets every event, identical, but each
    event is executed once for all of them (gateway.render) and its object loaded once (gateway.fanout.Batch),
    not once per subscriber."""
    loads: list[str] = []
    renders: list[object] = []
    execute = StrawberryGraphQLCoreExecutionContext.execute_operation

    def counted(self: StrawberryGraphQLCoreExecutionContext, serially: bool | None = None) -> Any:
        if self.operation.operation is OperationType.SUBSCRIPTION:
            renders.append(self.root_value)
        return execute(self, serially)

    monkeypatch.setattr(StrawberryGraphQLCoreExecutionContext, "execute_operation", counted)

    def count(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM messages" in statement:
            loads.append(statement)

    engine = gateway.app.state.services.engine.sync_engine
    start = await cursor_now(fresh)
    streams = [follow(gateway, fresh.client.token or "", FOLLOW, {"acc": fresh.gid, "after": start}) for _ in range(12)]
    firsts = [asyncio.ensure_future(anext(s)) for s in streams]
    await asyncio.sleep(1.0)  # all twelve are subscribed and wait at the same cursor
    event.listen(engine, "before_cursor_execute", count)
    try:
        await deliver(gw_store, fresh.id, fresh.inbox, [(mail("shared"), [])])
        total = seq_of(await cursor_now(fresh)) - seq_of(start)
        received = [
            [await first] + await take(stream, total - 1) for first, stream in zip(firsts, streams, strict=True)
        ]
    finally:
        event.remove(engine, "before_cursor_execute", count)
        for stream in streams:
            await stream.aclose()  # type: ignore[attr-defined]
    assert all(r == received[0] for r in received)
    subjects = [r["changes"]["object"]["subject"] for r in received[0] if r["changes"]["objectType"] == "MESSAGE"]
    assert subjects == ["shared"]
    assert len(loads) == 1, loads
    assert len(renders) == total


async def test_a_stray_doorbell_with_a_seq_the_log_has_not_reached_costs_one_read_not_a_spin(
    gateway: ServerThread, fresh: Fresh, gw_store: Store
) -> None:
    """A ring on this account's channel with a seq far ahead of this log (rings of other deployments, named after
    their databases, never arrive here). Subscribers re-read once per ring and go back to waiting; they still get
    real changes."""
    fanout = gateway.app.state.services.fanout
    start = await cursor_now(fresh)
    stream = follow(gateway, fresh.client.token or "", FOLLOW, {"acc": fresh.gid, "after": start})
    first = asyncio.ensure_future(anext(stream))
    try:
        await asyncio.sleep(0.5)  # subscribed and waiting
        reads = fanout.reads
        publisher = Redis.from_url(REDIS_URL)
        try:
            for _ in range(3):
                await publisher.publish(gw_store.doorbells.channel(fresh.id), str(10**9))
                await asyncio.sleep(0.2)
        finally:
            await publisher.aclose()
        await asyncio.sleep(0.5)
        assert fanout.reads - reads <= 3  # one read per ring (a spinning subscriber makes thousands)
        await deliver(gw_store, fresh.id, fresh.inbox, [(mail("after the stray rings"), [])])
        async with asyncio.timeout(15):
            assert seq_of((await first)["changes"]["cursor"]) == seq_of(start) + 1
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
