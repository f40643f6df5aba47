"""The gateway's websocket protocol (gateway.wsprotocol): uvicorn's, holding less per socket. Its queue and gate
behave as asyncio's, and a served socket holds them and no handshake once accepted."""

from __future__ import annotations

import asyncio
import json

import websockets
from uvicorn._types import ASGIReceiveEvent

from gateway.testing import ServerThread, World
from gateway.wsprotocol import Gate, Inbox, LeanWebSocketProtocol


def _message(text: str) -> ASGIReceiveEvent:
    return {"type": "websocket.receive", "text": text}


async def test_the_inbox_hands_messages_in_order_each_to_one_receive() -> None:
    inbox = Inbox()
    inbox.put_nowait(_message("a"))
    assert not inbox.empty()
    first = asyncio.ensure_future(inbox.get())
    second = asyncio.ensure_future(inbox.get())
    third = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    assert first.done()
    assert first.result() == _message("a")
    assert not second.done()
    inbox.put_nowait(_message("b"))
    inbox.put_nowait(_message("c"))
    assert {(await second)["text"], (await third)["text"]} == {"b", "c"}  # type: ignore[typeddict-item]
    assert inbox.empty()


async def test_a_receive_cancelled_after_it_was_woken_leaves_the_message_to_the_next() -> None:
    inbox = Inbox()
    woken = asyncio.ensure_future(inbox.get())
    other = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait(_message("a"))  # wakes `woken`, which is cancelled before it runs
    woken.cancel()
    assert await asyncio.wait_for(other, 5) == _message("a")
    assert woken.cancelled()


async def test_the_gate_holds_writers_while_closed() -> None:
    gate = Gate()
    await gate.wait()  # open: at once
    gate.clear()
    waiting = asyncio.ensure_future(gate.wait())
    await asyncio.sleep(0)
    assert not waiting.done()
    assert not gate.is_set()
    gate.set()
    await asyncio.wait_for(waiting, 5)
    assert gate.is_set()


async def test_an_accepted_socket_holds_the_lean_queue_and_no_handshake(gateway: ServerThread, world: World) -> None:
    url = gateway.url.replace("http://", "ws://") + "/graphql"
    async with websockets.connect(url, subprotocols=[websockets.Subprotocol("graphql-transport-ws")]) as ws:
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {world.token_bob}"}})
        )
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "connection_ack"
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": "{ accounts { totalCount } }"}}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "next"
        sockets = [c for c in gateway.server.server_state.connections if isinstance(c, LeanWebSocketProtocol)]
        assert sockets
        for socket in sockets:
            assert isinstance(socket.queue, Inbox)
            assert isinstance(socket.writable, Gate)
            if socket.handshake_complete:
                assert not hasattr(socket, "request")
                assert not hasattr(socket, "response")
