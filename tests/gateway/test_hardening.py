"""The gateway under abuse and faults, against real servers: open websockets hold no database connection and read
fresh rows, a revoked token loses its open streams, a Redis that accepts connections but never answers costs a
bounded wait, and the caps (body size, streams per token, anonymous sockets, invalid tokens) refuse with typed
errors."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
import websockets
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from gateway.auth import TokenCache
from gateway.config import GatewayConfig
from gateway.ids import to_global
from gateway.testing import ServerThread, World, deliver, start_gateway
from schema import actions, tokens
from schema.crypto import CredentialBox
from schema.models import Message
from schema.settings import Settings
from schema.unit import Store
from tests.gateway.test_changes import Fresh, fresh_account, mail
from tests.gateway.test_sse import events, rest, stream, take
from tests.gateway.test_subscriptions import FOLLOW
from tests.gateway.test_subscriptions_faults import PrivateRedis

PROTOCOL = websockets.Subprotocol("graphql-transport-ws")
CACHE_SECONDS = 0.5
UNREAD = "query($m: ID!) { node(id: $m) { ... on Message { unread } } }"


@pytest.fixture(scope="module")
def hardened(gw_settings: Settings, world: World) -> Iterator[ServerThread]:
    """A gateway of this module, with a short token cache (revocations show within half a second)."""
    server = start_gateway(gw_settings, GatewayConfig(token_cache_seconds=CACHE_SECONDS))
    yield server
    server.stop()


@pytest.fixture
async def client(hardened: ServerThread) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=hardened.url, timeout=60) as http:
        yield http


@pytest.fixture
async def fresh(gw_store: Store, credential_box: CredentialBox, client: httpx.AsyncClient) -> Fresh:
    return await fresh_account(gw_store, credential_box, client)


class Socket:
    """One graphql-transport-ws connection, acknowledged."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ops = 0

    @classmethod
    async def open(cls, server: ServerThread, token: str | None) -> Socket:
        ws = await websockets.connect(server.url.replace("http://", "ws://") + "/graphql", subprotocols=[PROTOCOL])
        payload = {"Authorization": f"Bearer {token}"} if token else {}
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        ack = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert ack["type"] == "connection_ack", ack
        return cls(ws)

    async def query(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        self.ops += 1
        op = str(self.ops)
        await self.ws.send(
            json.dumps({"id": op, "type": "subscribe", "payload": {"query": query, "variables": variables}})
        )
        async with asyncio.timeout(10):
            while True:
                message = json.loads(await self.ws.recv())
                if message.get("id") == op and message["type"] in ("next", "error"):
                    payload: dict[str, Any] = message["payload"]
                    return payload

    async def closed_with(self, timeout: float) -> int | None:
        """The close code the server sends within `timeout` (messages before it are read and dropped)."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    await self.ws.recv()
        except ConnectionClosed as closed:
            return None if closed.rcvd is None else closed.rcvd.code


async def message_id(store: Store, account_id: int) -> int:
    async with store.sessions() as session:
        found = await session.scalar(select(Message.id).where(Message.account_id == account_id).limit(1))
    assert found is not None
    return found


# --- 1. websockets hold a database connection only while a statement runs -----------------------------------


async def test_idle_websockets_leave_the_pool_to_others_and_read_fresh_rows(
    hardened: ServerThread, fresh: Fresh, world: World, client: httpx.AsyncClient, gw_store: Store
) -> None:
    """30 sockets of one token, each having run a query, stay open: another token's HTTP query still answers at
    once (the pool holds 10 + 10 connections). And a row changed between two queries of one socket reads fresh."""
    await deliver(gw_store, fresh.id, fresh.inbox, [(mail("to be read"), [])])
    mid = to_global("Message", await message_id(gw_store, fresh.id))
    async with AsyncExitStack() as sockets:
        opened: list[Socket] = []
        for _ in range(30):
            socket = await Socket.open(hardened, fresh.client.token)
            sockets.push_async_callback(socket.ws.close)
            opened.append(socket)
            first = await socket.query("{ accounts { nodes { address } } }")
            assert "errors" not in first, first
        started = time.monotonic()
        answer = await asyncio.wait_for(
            client.post(
                "/graphql",
                json={"query": "{ accounts { nodes { address } } }"},
                headers={"authorization": f"Bearer {world.token_bob}"},
            ),
            timeout=5,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["data"]["accounts"]["nodes"] == [{"address": world.bob.address}]
        assert time.monotonic() - started < 1.0

        assert (await opened[0].query(UNREAD, {"m": mid}))["data"]["node"] == {"unread": True}
        async with gw_store.unit(fresh.id) as uow:
            await actions.set_flags(uow, [int(await message_id(gw_store, fresh.id))], ["\\Seen"], [])
        assert (await opened[0].query(UNREAD, {"m": mid}))["data"]["node"] == {"unread": False}


# --- 2. a revoked token loses its open websockets and event streams ------------------------------------------


async def test_a_revoked_token_loses_its_open_websocket(hardened: ServerThread, fresh: Fresh, gw_store: Store) -> None:
    socket = await Socket.open(hardened, fresh.client.token)
    try:
        await socket.query("{ accounts { totalCount } }")
        await socket.ws.send(
            json.dumps(
                {"id": "follow", "type": "subscribe", "payload": {"query": FOLLOW, "variables": {"acc": fresh.gid}}}
            )
        )
        async with gw_store.sessions() as session, session.begin():
            assert fresh.client.token is not None
            assert await tokens.revoke(session, fresh.client.token)
        assert await socket.closed_with(timeout=CACHE_SECONDS * 2 + 3) == 4403
    finally:
        await socket.ws.close()


async def test_a_revoked_token_closes_every_socket_of_that_token_and_no_other(
    hardened: ServerThread, fresh: Fresh, gw_store: Store
) -> None:
    """The sockets of a token share one watcher (TokenCache.watch): once the token is revoked, each of them is
    closed with 4403, subscribed or not, and a socket of another token of the same account keeps answering."""
    async with gw_store.sessions() as session, session.begin():
        other = await tokens.create_token(session, [fresh.id])
    async with AsyncExitStack() as stack:
        revoked = []
        for i in range(3):
            socket = await Socket.open(hardened, fresh.client.token)
            stack.push_async_callback(socket.ws.close)
            if i:
                payload = {"query": FOLLOW, "variables": {"acc": fresh.gid}}
                await socket.ws.send(json.dumps({"id": "follow", "type": "subscribe", "payload": payload}))
            revoked.append(socket)
        kept = await Socket.open(hardened, other)
        stack.push_async_callback(kept.ws.close)
        async with gw_store.sessions() as session, session.begin():
            assert fresh.client.token is not None
            assert await tokens.revoke(session, fresh.client.token)
        codes = await asyncio.gather(*(s.closed_with(timeout=CACHE_SECONDS * 2 + 3) for s in revoked))
        assert codes == [4403, 4403, 4403]
        assert (await kept.query("{ accounts { totalCount } }"))["data"] == {"accounts": {"totalCount": 1}}


def _socket_tasks(server: ServerThread) -> dict[str, int]:
    """The gateway's unfinished tasks of the gateway's, uvicorn's and Strawberry's code (not the database driver's
    short-lived ones), counted by name: a task's name, or its coroutine's."""
    loop = server.app.state.services.fanout._task.get_loop()
    counts: dict[str, int] = {}
    for task in asyncio.all_tasks(loop):
        code = getattr(task.get_coro(), "cr_code", None)
        if code is None or not any(part in code.co_filename for part in ("/gateway/", "/uvicorn/", "/strawberry/")):
            continue
        name = task.get_name()
        if name.startswith("Task-"):
            name = getattr(task.get_coro(), "__qualname__", name)
        counts[name] = counts.get(name, 0) + 1
    return counts


async def test_an_idle_subscription_socket_holds_two_tasks(hardened: ServerThread, fresh: Fresh) -> None:
    """An idle socket with a subscription holds uvicorn's task of the socket and the operation's: its token's
    re-check is one task for all of the token's sockets, and the finished wait for connection_init is not kept."""
    before = _socket_tasks(hardened)
    async with AsyncExitStack() as stack:
        for _ in range(5):
            socket = await Socket.open(hardened, fresh.client.token)
            stack.push_async_callback(socket.ws.close)
            payload = {"query": FOLLOW, "variables": {"acc": fresh.gid}}
            await socket.ws.send(json.dumps({"id": "follow", "type": "subscribe", "payload": payload}))
            await socket.ws.send(json.dumps({"type": "ping"}))  # answered once the subscribe was handled
            while json.loads(await asyncio.wait_for(socket.ws.recv(), 10))["type"] != "pong":
                pass
        after = _socket_tasks(hardened)
    grown = {name: n - before.get(name, 0) for name, n in after.items() if n > before.get(name, 0)}
    assert grown.pop("WebSocketsSansIOProtocol.run_asgi") == 5
    assert grown.pop("Connection.run_operation") == 5
    # Nothing else per socket: the token's one watcher, and short-lived shared reads at most.
    assert all(n < 5 for n in grown.values()), grown


async def test_a_revoked_token_loses_its_open_event_stream(
    client: httpx.AsyncClient, fresh: Fresh, gw_store: Store
) -> None:
    async with stream(client, FOLLOW, {"acc": fresh.gid}, fresh.client.token) as r:
        assert r.status_code == 200
        feed = events(r)
        await deliver(gw_store, fresh.id, fresh.inbox, [(mail("before the revocation"), [])])
        await take(feed, 1)
        async with gw_store.sessions() as session, session.begin():
            assert fresh.client.token is not None
            assert await tokens.revoke(session, fresh.client.token)
        ending = await rest(feed, timeout=CACHE_SECONDS * 2 + 3)
    assert ending[-1].kind == "complete"
    assert any(
        e.kind == "next" and e.data.get("errors", [{}])[0].get("extensions", {}).get("code") == "UNAUTHENTICATED"
        for e in ending
    ), ending


# --- 4. caps ---------------------------------------------------------------------------------------------------

STREAMS = 3
GRACE = 1.0


@pytest.fixture(scope="module")
def capped(gw_settings: Settings, world: World) -> Iterator[ServerThread]:
    """A gateway with small caps: 3 streams per token, 1 s to send connection_init."""
    server = start_gateway(gw_settings, GatewayConfig(max_streams_per_token=STREAMS, ws_init_seconds=GRACE))
    yield server
    server.stop()


async def test_a_token_holds_at_most_its_streams(capped: ServerThread, fresh: Fresh) -> None:
    """Websockets and event streams of one token count together: beyond the cap a socket is closed with 4429 and
    an event stream is a 429; a closed one gives its slot back."""
    async with AsyncExitStack() as held, httpx.AsyncClient(base_url=capped.url, timeout=30) as http:
        sockets = [await Socket.open(capped, fresh.client.token) for _ in range(STREAMS - 1)]
        for socket in sockets:
            held.push_async_callback(socket.ws.close)
        sse = await held.enter_async_context(stream(http, FOLLOW, {"acc": fresh.gid}, fresh.client.token))
        assert sse.status_code == 200

        refused = await websockets.connect(capped.url.replace("http://", "ws://") + "/graphql", subprotocols=[PROTOCOL])
        held.push_async_callback(refused.close)
        await refused.send(
            json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {fresh.client.token}"}})
        )
        assert await Socket(refused).closed_with(timeout=5) == 4429
        async with stream(http, FOLLOW, {"acc": fresh.gid}, fresh.client.token) as r:
            assert r.status_code == 429
            assert json.loads(await r.aread())["errors"][0]["extensions"]["code"] == "RATE_LIMITED"

        await sockets[0].ws.close()
        async with asyncio.timeout(5):
            while True:  # the server notices the close a moment later
                async with stream(http, FOLLOW, {"acc": fresh.gid}, fresh.client.token) as r:
                    if r.status_code == 200:
                        break
                await asyncio.sleep(0.05)


async def test_a_websocket_without_connection_init_is_closed_after_the_grace(capped: ServerThread) -> None:
    ws = await websockets.connect(capped.url.replace("http://", "ws://") + "/graphql", subprotocols=[PROTOCOL])
    try:
        assert await Socket(ws).closed_with(timeout=GRACE + 3) == 4408
    finally:
        await ws.close()


async def test_an_anonymous_websocket_is_closed_after_the_grace(capped: ServerThread) -> None:
    socket = await Socket.open(capped, None)
    try:
        introspection = await socket.query("{ __typename }")
        assert introspection["data"] == {"__typename": "Query"}
        assert await socket.closed_with(timeout=GRACE + 3) == 4401
    finally:
        await socket.ws.close()


# --- 4. caps: body size, subscriptions per token, concurrency, unknown tokens per address ------------------

BODY = 4096


@pytest.fixture(scope="module")
def tight_caps(gw_settings: Settings, world: World) -> Iterator[ServerThread]:
    """A gateway with small caps: 4 KiB bodies, 3 subscriptions per token, 3 unknown tokens per address."""
    config = GatewayConfig(max_body_bytes=BODY, max_subscriptions_per_token=3, max_auth_failures=3)
    server = start_gateway(gw_settings, config)
    yield server
    server.stop()


def too_large(response: httpx.Response) -> None:
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("application/json")
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert f"larger than {BODY} bytes" in error["message"]


async def test_a_large_body_is_refused_before_it_is_read(tight_caps: ServerThread) -> None:
    """An anonymous client announces 10 MB and sends 1 KiB: the 413 comes at once, the rest is never waited for."""
    reader, writer = await asyncio.open_connection("127.0.0.1", tight_caps.port)
    try:
        head = (
            "POST /graphql HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
            "Content-Length: 10000000\r\n\r\n"
        )
        writer.write(head.encode() + b"{" + b" " * 1024)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(4096), timeout=5)
    finally:
        writer.close()
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 413 Request Entity Too Large"
    assert b"larger than 4096 bytes" in rest


async def test_a_chunked_body_is_refused_once_it_passes_the_cap(tight_caps: ServerThread, world: World) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b'{"query": "{ __typename }", "padding": "'
        for _ in range(100):  # 100 KiB, without a Content-Length
            yield b"x" * 1024
        yield b'"}'

    async with httpx.AsyncClient(base_url=tight_caps.url, timeout=10) as http:
        too_large(await http.post("/graphql", content=body(), headers={"content-type": "application/json"}))
        small = await http.post("/graphql", json={"query": "{ __typename }"})  # under the cap: served
        assert small.json()["data"] == {"__typename": "Query"}
        # Authenticated or not, and over graphql-sse too.
        headers = {"authorization": f"Bearer {world.token_alice}", "accept": "text/event-stream"}
        too_large(await http.post("/graphql", json={"query": "{ __typename }", "pad": "x" * BODY}, headers=headers))


async def test_a_websocket_message_past_the_cap_closes_the_socket(tight_caps: ServerThread, world: World) -> None:
    socket = await Socket.open(tight_caps, world.token_alice)
    try:
        await socket.ws.send(
            json.dumps({"id": "1", "type": "subscribe", "payload": {"query": "{ __typename }" + " " * BODY}})
        )
        assert await socket.closed_with(timeout=5) == 1009  # message too big
    finally:
        await socket.ws.close()


async def subscribe(socket: Socket, op: str, account: str) -> None:
    query = "subscription($a: ID!) { changes(accountId: $a) { cursor } }"
    await socket.ws.send(
        json.dumps({"id": op, "type": "subscribe", "payload": {"query": query, "variables": {"a": account}}})
    )


async def answer_to(socket: Socket, op: str, timeout: float = 5) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            message = json.loads(await socket.ws.recv())
            if message.get("id") == op:
                answer: dict[str, Any] = message
                return answer


async def test_a_token_runs_at_most_its_subscriptions_over_all_its_sockets(
    tight_caps: ServerThread, fresh: Fresh, gw_store: Store
) -> None:
    token = fresh.client.token
    a, b = await Socket.open(tight_caps, token), await Socket.open(tight_caps, token)
    try:
        await subscribe(a, "a1", fresh.gid)
        await subscribe(a, "a2", fresh.gid)
        await subscribe(b, "b1", fresh.gid)
        await asyncio.sleep(0.3)  # the three are running (a live subscription sends nothing until a change)
        await subscribe(b, "b2", fresh.gid)
        refused = await answer_to(b, "b2")
        assert refused["type"] in ("error", "next")
        errors = refused["payload"] if refused["type"] == "error" else refused["payload"]["errors"]
        assert [e["extensions"]["code"] for e in errors] == ["RATE_LIMITED"]
        assert "3 subscriptions" in errors[0]["message"]

        await a.ws.send(json.dumps({"id": "a1", "type": "complete"}))  # stopping one gives its slot back
        await asyncio.sleep(0.3)
        await subscribe(b, "b3", fresh.gid)
        await deliver(gw_store, fresh.id, fresh.inbox, [(mail("after the cap"), [])])
        assert (await answer_to(b, "b3"))["type"] == "next"
    finally:
        await a.ws.close()
        await b.ws.close()


@pytest.fixture(scope="module")
def crowded(gw_settings: Settings, world: World) -> Iterator[ServerThread]:
    server = start_gateway(gw_settings, GatewayConfig(max_concurrency=4))
    yield server
    server.stop()


async def test_the_concurrency_limit_answers_503_beyond_it(crowded: ServerThread, world: World) -> None:
    """uvicorn's limit_concurrency, from max_concurrency: four open websockets fill a gateway allowed four."""
    async with httpx.AsyncClient(base_url=crowded.url, timeout=10) as http:
        assert (await http.get("/healthz")).status_code == 200
    sockets = [await Socket.open(crowded, world.token_alice) for _ in range(4)]
    try:
        async with httpx.AsyncClient(base_url=crowded.url, timeout=10) as http:
            busy = await http.get("/healthz")
            assert busy.status_code == 503
    finally:
        for socket in sockets:
            await socket.ws.close()
    async with httpx.AsyncClient(base_url=crowded.url, timeout=10) as http:
        for _ in range(50):  # the server notices the closes a moment later
            if (await http.get("/healthz")).status_code == 200:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the gateway still refuses after the sockets closed")


async def test_an_address_sending_unknown_tokens_is_throttled(tight_caps: ServerThread, world: World) -> None:
    """Three unknown tokens from one address, then 429 for any token the process does not hold as valid; tokens
    it already served keep working, and other addresses are not affected."""
    me = {"x-forwarded-for": "192.0.2.7"}  # uvicorn trusts the loopback proxy's forwarded address
    query = {"query": "{ __typename }"}
    async with httpx.AsyncClient(base_url=tight_caps.url, timeout=10) as http:

        async def post(token: str, address: dict[str, str] = me) -> httpx.Response:
            return await http.post("/graphql", json=query, headers={**address, "authorization": f"Bearer {token}"})

        assert (await post(world.token_alice)).status_code == 200  # held as valid from now on
        assert [(await post(f"iqt_random{i}")).status_code for i in range(3)] == [401, 401, 401]
        throttled = await post("iqt_random3")
        assert throttled.status_code == 429
        assert throttled.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
        assert 0 < int(throttled.headers["retry-after"]) <= 60
        assert (await post(world.token_bob)).status_code == 429  # not known valid yet: no token query for it
        assert (await post(world.token_alice)).status_code == 200
        assert (await post("iqt_random4", {"x-forwarded-for": "192.0.2.8"})).status_code == 401
        # The same cap on a websocket's connection_init: closed with 4429.
        ws = await websockets.connect(
            tight_caps.url.replace("http://", "ws://") + "/graphql",
            subprotocols=[PROTOCOL],
            additional_headers=me,
        )
        try:
            await ws.send(json.dumps({"type": "connection_init", "payload": {"Authorization": "Bearer iqt_random5"}}))
            assert await Socket(ws).closed_with(timeout=5) == 4429
        finally:
            await ws.close()


async def test_unknown_tokens_never_evict_a_valid_one_from_the_cache(
    gw_engine: AsyncEngine, gw_store: Store, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flood of random tokens fills the refusals' cache, not the grants': the valid token stays cached (so it
    still works within the cache period after it is revoked, proving it was not looked up again)."""
    monkeypatch.setattr("gateway.auth.MAX_CACHED", 5)
    monkeypatch.setattr("gateway.auth.MAX_REFUSED", 5, raising=False)
    async with gw_store.sessions() as session, session.begin():
        token = await tokens.create_token(session, [world.alice.id])
    cache = TokenCache(gw_engine, ttl=600)
    viewer = await cache.viewer(token)
    assert viewer is not None
    for i in range(20):
        assert await cache.viewer(f"iqt_flood{i}") is None
    async with gw_store.sessions() as session, session.begin():
        assert await tokens.revoke(session, token)
    assert await cache.viewer(token) == viewer


# --- 5. a Redis that accepts connections but never answers ---------------------------------------------------


@pytest.fixture
def stopped_redis() -> Iterator[PrivateRedis]:
    """A redis-server of this test alone, SIGSTOPped: the kernel still accepts connections, nothing answers."""
    if shutil.which("redis-server") is None:
        pytest.fail("this test needs redis-server (Debian: apt-get install redis-server)")
    server = PrivateRedis()
    server.start()
    try:
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGSTOP)
        yield server
    finally:
        if server.proc is not None:
            os.kill(server.proc.pid, signal.SIGCONT)
        server.stop()


async def timed_query(http: httpx.AsyncClient, token: str) -> tuple[float, httpx.Response]:
    started = time.monotonic()
    response = await asyncio.wait_for(
        http.post(
            "/graphql", json={"query": "{ accounts { totalCount } }"}, headers={"authorization": f"Bearer {token}"}
        ),
        timeout=20,
    )
    return time.monotonic() - started, response


@pytest.mark.parametrize("fail_open", [True, False])
async def test_a_silent_redis_costs_an_http_query_one_short_wait(
    gw_settings: Settings, world: World, stopped_redis: PrivateRedis, fail_open: bool
) -> None:
    """The rate limiter waits at most a second on a Redis that never answers, then its breaker answers at once:
    served unthrottled (fail open, the default) or RATE_LIMITED (fail closed)."""
    settings = dataclasses.replace(gw_settings, redis_url=stopped_redis.url)
    server = start_gateway(settings, GatewayConfig(rate_limit_fail_open=fail_open, webhooks=False))
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            first, answer = await timed_query(http, world.token_alice)
            second, again = await timed_query(http, world.token_alice)
        for response in (answer, again):
            if fail_open:
                assert response.status_code == 200, response.text
                assert response.json()["data"] == {"accounts": {"totalCount": 1}}
            else:
                assert response.status_code == 429, response.text
                assert response.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
        assert first < 2.0
        assert second < 0.5  # the breaker is open: no second timeout
    finally:
        server.stop()


async def test_a_query_its_credit_covers_does_not_wait_for_redis(gw_settings: Settings, world: World) -> None:
    """Once Redis has said what a token has left in the window, a query that this covers goes on without a Redis
    round trip (its cost still reaches Redis behind it): with Redis gone quiet just after, the next query is
    answered at once with the budget it was charged against; then the failed answer ends the credit and the
    limiter fails closed as configured."""
    redis = PrivateRedis()
    redis.start()
    settings = dataclasses.replace(gw_settings, redis_url=redis.url)
    server = start_gateway(settings, GatewayConfig(rate_limit_fail_open=False, webhooks=False))
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            _, first = await timed_query(http, world.token_alice)
            assert first.status_code == 200, first.text
            cost = first.json()["extensions"]["cost"]
            assert redis.proc is not None
            os.kill(redis.proc.pid, signal.SIGSTOP)
            try:
                took, covered = await timed_query(http, world.token_alice)
                assert covered.status_code == 200, covered.text
                assert took < 0.5
                assert covered.json()["extensions"]["cost"]["remaining"] == cost["remaining"] - cost["requested"]
                await asyncio.sleep(2)  # the charge behind it times out: no credit, and the breaker is open
                _, refused = await timed_query(http, world.token_alice)
                assert refused.status_code == 429, refused.text
            finally:
                os.kill(redis.proc.pid, signal.SIGCONT)
    finally:
        server.stop()
        redis.stop()


async def test_a_unit_of_work_commits_and_returns_while_redis_never_answers(
    gw_engine: AsyncEngine, credential_box: CredentialBox, client: httpx.AsyncClient, stopped_redis: PrivateRedis
) -> None:
    """The doorbell rings after the commit, bounded: a client made without any timeout still returns in time."""
    fresh = await fresh_account(Store(gw_engine), credential_box, client)
    redis = Redis.from_url(stopped_redis.url)
    try:
        store = Store(gw_engine, redis)
        started = time.monotonic()
        await asyncio.wait_for(deliver(store, fresh.id, fresh.inbox, [(mail("while redis sleeps"), [])]), timeout=20)
        assert time.monotonic() - started < 2.0
        async with store.sessions() as session:
            assert await session.scalar(select(Message.id).where(Message.account_id == fresh.id)) is not None
    finally:
        await redis.aclose()
