"""The websocket route speaks graphql-transport-ws: the token rides in connection_init, a bad one is refused
with 4403, operations run as the token's viewer, and browsers on other origins are turned away."""

from __future__ import annotations

import json
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from gateway.testing import ServerThread, World

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
