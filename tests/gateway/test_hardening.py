"""The gateway under abuse and faults, against real servers: open websockets hold no database connection and read
fresh rows, a revoked token loses its open streams, a Redis that accepts connections but never answers costs a
bounded wait, and the caps (body size, streams per token, anonymous sockets, invalid tokens) refuse with typed
errors."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
import websockets
from sqlalchemy import select
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from gateway.config import GatewayConfig
from gateway.ids import to_global
from gateway.testing import ServerThread, World, deliver, start_gateway
from schema import actions
from schema.crypto import CredentialBox
from schema.models import Message
from schema.settings import Settings
from schema.unit import Store
from tests.gateway.test_changes import Fresh, fresh_account, mail

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
