"""The websocket route speaks graphql-transport-ws: the token rides in connection_init, a bad one is refused
with 4403, operations run as the token's viewer, browsers on other origins are turned away, and a connection
holds at most `max_subscriptions_per_connection` operations at once."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from gateway.config import GatewayConfig
from gateway.testing import ServerThread, World, add_folder, start_gateway
from schema.crypto import CredentialBox
from schema.settings import Settings
from schema.unit import Store
from tests.gateway.test_changes import CHANGES, CURSOR, Fresh, fresh_account

PROTOCOL = "graphql-transport-ws"


def ws_url(gateway: ServerThread) -> str:
    return gateway.url.replace("http://", "ws://") + "/graphql"


async def operate(gateway: ServerThread, payload: dict[str, Any], query: str) -> list[dict[str, Any]]:
    async with websockets.connect(ws_url(gateway), subprotocols=[websockets.Subprotocol(PROTOCOL)]) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
        messages = []
        while True:
            message = json.loads(await ws.recv())
            messages.append(message)
            if message["type"] in ("complete", "error"):
                return messages


async def test_a_query_over_graphql_transport_ws_runs_as_the_tokens_viewer(gateway: ServerThread, world: World) -> None:
    messages = await operate(
        gateway, {"Authorization": f"Bearer {world.token_alice}"}, "{ accounts { nodes { address } } }"
    )
    assert messages[0]["type"] == "next"
    assert messages[0]["payload"]["data"] == {"accounts": {"nodes": [{"address": world.alice.address}]}}
    assert messages[-1]["type"] == "complete"


async def test_without_a_token_fields_say_unauthenticated(gateway: ServerThread) -> None:
    messages = await operate(gateway, {}, "{ accounts { totalCount } }")
    assert messages[0]["payload"]["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_a_bad_token_is_refused_with_4403(gateway: ServerThread) -> None:
    async with websockets.connect(ws_url(gateway), subprotocols=[websockets.Subprotocol(PROTOCOL)]) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {"Authorization": "Bearer iqt_nope"}}))
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4403


async def test_a_browser_page_on_another_origin_cannot_open_the_websocket(gateway: ServerThread) -> None:
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        async with websockets.connect(
            ws_url(gateway),
            subprotocols=[websockets.Subprotocol(PROTOCOL)],
            origin=websockets.Origin("https://evil.example"),
        ):
            pass
    assert refused.value.response.status_code == 403


async def test_a_page_of_the_gateways_own_origin_may(gateway: ServerThread, world: World) -> None:
    async with websockets.connect(
        ws_url(gateway),
        subprotocols=[websockets.Subprotocol(PROTOCOL)],
        origin=websockets.Origin(gateway.url),
    ) as ws:
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {world.token_alice}"}})
        )
        assert json.loads(await ws.recv())["type"] == "connection_ack"


# --- the per-connection subscription limit -------------------------------------------------------------

LIMIT = 3
FOLLOW = """subscription($acc: ID!, $after: String) {
  changes(accountId: $acc, after: $after) { cursor operation objectType } }"""


class Multiplexed:
    """One graphql-transport-ws connection whose messages are sorted by operation id as they arrive."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.inbox: defaultdict[str, asyncio.Queue[dict[str, Any]]] = defaultdict(asyncio.Queue)
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            message = json.loads(raw)
            self.inbox[message.get("id", "")].put_nowait(message)

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def subscribe(self, op: str, fresh: Fresh, after: str) -> None:
        variables = {"acc": fresh.gid, "after": after}
        await self.send({"id": op, "type": "subscribe", "payload": {"query": FOLLOW, "variables": variables}})

    async def next(self, op: str, timeout: float = 15) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            return await self.inbox[op].get()

    async def close(self) -> None:
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader

    def waiting(self, op: str) -> int:
        return self.inbox[op].qsize()

    async def cursors(self, op: str, n: int) -> list[str]:
        """The cursors of the next n events of a subscription (each a `next` message)."""
        found = []
        for _ in range(n):
            message = await self.next(op)
            assert message["type"] == "next", message
            found.append(message["payload"]["data"]["changes"]["cursor"])
        return found


async def changes_after(fresh: Fresh, cursor: str) -> list[str]:
    """The cursors the change log holds after `cursor`, read over HTTP (what every subscriber must get)."""
    page = (await fresh.client.data(CHANGES, {"acc": fresh.gid, "after": cursor, "first": 100}))["changes"]
    return [c["cursor"] for c in page["changes"]]


async def test_a_connection_holds_at_most_the_limit_and_refuses_the_next_with_an_error_message(
    gw_settings: Settings, gw_store: Store, credential_box: CredentialBox, http: httpx.AsyncClient
) -> None:
    """Strawberry 0.341 (graphql_transport_ws/handlers.py, handle_subscribe): an operation beyond the limit gets
    an `error` message for its id, `[{"message": "Subscription limit reached"}]`, and the socket stays open;
    its earlier operations carry on. The limit counts every in-flight operation on the connection."""
    fresh = await fresh_account(gw_store, credential_box, http)
    start = (await fresh.client.data(CURSOR, {"acc": fresh.gid}))["changesCursor"]
    limited = start_gateway(gw_settings, GatewayConfig(max_subscriptions_per_connection=LIMIT, webhooks=False))
    try:
        async with websockets.connect(ws_url(limited), subprotocols=[websockets.Subprotocol(PROTOCOL)]) as ws:
            await ws.send(
                json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {fresh.client.token}"}})
            )
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            conn = Multiplexed(ws)
            try:
                first = [str(n) for n in range(1, LIMIT + 1)]
                for op in first:
                    await conn.subscribe(op, fresh, start)
                await conn.subscribe("over", fresh, start)

                refused = await conn.next("over")
                assert refused == {
                    "id": "over",
                    "type": "error",
                    "payload": [{"message": "Subscription limit reached"}],
                }

                await add_folder(gw_store, fresh.id, "Limit-1", None)
                expected = await changes_after(fresh, start)
                assert expected
                for op in first:
                    assert await conn.cursors(op, len(expected)) == expected, op
                assert conn.waiting("over") == 0  # the refused operation never ran

                # Completing one frees its place: a new subscription is accepted and follows the log.
                await conn.send({"id": "2", "type": "complete"})
                await conn.subscribe("again", fresh, expected[-1])
                await conn.subscribe("over-again", fresh, expected[-1])
                assert (await conn.next("over-again"))["type"] == "error"  # back at the limit: refused once more

                await add_folder(gw_store, fresh.id, "Limit-2", None)
                later = await changes_after(fresh, expected[-1])
                assert later
                for op in ("1", "3", "again"):
                    assert await conn.cursors(op, len(later)) == later, op
                await conn.send({"type": "ping"})
                assert (await conn.next(""))["type"] == "pong"
                assert conn.waiting("2") == 0  # completed: it got none of the events the others had by now
                assert conn.waiting("over") == 0
                assert ws.close_code is None  # the limit never closed the socket
            finally:
                await conn.close()
    finally:
        limited.stop()


def _awaited_files(coro: Any) -> list[str]:
    """The source files of a suspended coroutine's frames, down the chain of what each awaits."""
    files = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            files.append(frame.f_code.co_filename)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None) or getattr(coro, "gi_yieldfrom", None)
    return files


async def test_a_graphql_websocket_is_served_beneath_no_starlette_middleware(
    gateway: ServerThread, world: World
) -> None:
    """A socket on /graphql goes straight to the GraphQL view (gateway.app.Gateway): while it is open, the task
    serving it holds no frame of Starlette's middleware or router (each layer's frame stayed with every socket)."""
    async with websockets.connect(ws_url(gateway), subprotocols=[websockets.Subprotocol(PROTOCOL)]) as ws:
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {world.token_bob}"}})
        )
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        loop = gateway.app.state.services.fanout._task.get_loop()
        chains = [
            _awaited_files(task.get_coro())
            for task in asyncio.all_tasks(loop)
            if getattr(task.get_coro(), "__qualname__", "").endswith("run_asgi")
        ]
    assert chains
    for chain in chains:
        assert any("/strawberry/" in f for f in chain), chain
        assert not [f for f in chain if "/starlette/middleware/" in f or "/starlette/routing" in f], chain
