"""The sync process's operator endpoint, in this process: /metrics, routes added by others, loopback, a clean stop."""

from __future__ import annotations

import socket

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from inboxql.devmail import free_port, port_open
from ops.server import EndpointError, operator_endpoint, port_from_env


async def profile(request: Request) -> Response:
    return PlainTextResponse("main;sync 3\n")


async def test_it_serves_metrics_and_the_routes_it_is_given_then_stops() -> None:
    port = free_port()
    async with operator_endpoint(port, [Route("/debug/profile", profile)]) as server:
        assert server is not None
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            metrics = await client.get("/metrics")
            added = await client.get("/debug/profile")
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain; version=")
        assert "inboxql_loop_stalls_total" in metrics.text
        assert added.text == "main;sync 3\n"
        assert server.config.host == "127.0.0.1"  # loopback only: it asks for no token
    assert not port_open("127.0.0.1", port)


async def test_a_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(EndpointError, match=f"127.0.0.1:{port}"):
            async with operator_endpoint(port):
                pass


async def test_no_port_serves_nothing() -> None:
    async with operator_endpoint(None) as server:
        assert server is None


@pytest.mark.parametrize(("value", "expected"), [("", None), ("9464", 9464), (" 9464 ", 9464)])
def test_the_port_comes_from_inboxql_metrics_port(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: int | None
) -> None:
    monkeypatch.setenv("INBOXQL_METRICS_PORT", value)
    assert port_from_env() == expected


@pytest.mark.parametrize("value", ["http", "0", "70000", "-1"])
def test_a_port_that_is_not_one_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("INBOXQL_METRICS_PORT", value)
    with pytest.raises(EndpointError, match="INBOXQL_METRICS_PORT"):
        port_from_env()
