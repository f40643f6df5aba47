"""`profile_routes(sampler)` as the sync process's operator server mounts it, on a real uvicorn server: loopback
clients get the profile, a client from another address gets a JSON 403, a process whose sampler is off a 503."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from gateway.testing import ServerThread
from inboxql.devmail import free_port
from ops.profile import is_loopback, profile_routes
from ops.sampler import ProfilerConfig, Sampler

BUSY = "tests.ops.test_profile:burn_on_the_operator_loop"


def burn_on_the_operator_loop(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _non_loopback_address() -> str | None:
    """An address of this machine that is not loopback (the one its default route leaves by), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent by a UDP connect
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if is_loopback(address) else address


@contextlib.contextmanager
def serving(sampler: Sampler) -> Iterator[ServerThread]:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        sampler.start()
        try:
            yield
        finally:
            sampler.stop()

    app = Starlette(routes=profile_routes(sampler), lifespan=lifespan)
    port = free_port()
    # On every address, as an operator might bind it by mistake: the guard, not the bind, keeps others out.
    config = uvicorn.Config(app, host="0.0.0.0", port=port, log_level="warning", lifespan="on")
    server = ServerThread(app, port, config)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_loopback_gets_the_profile_and_another_address_is_refused() -> None:
    sampler = Sampler(ProfilerConfig(hz=99))
    with serving(sampler) as server:
        assert sampler.loop is not None
        sampler.loop.call_soon_threadsafe(burn_on_the_operator_loop, 0.5)
        time.sleep(0.8)
        async with httpx.AsyncClient(timeout=30) as http:
            local = await http.get(f"http://127.0.0.1:{server.port}/debug/profile", params={"format": "collapsed"})
            assert local.status_code == 200
            assert local.headers["content-type"] == "text/plain; charset=utf-8"
            assert BUSY in local.text
            address = _non_loopback_address()
            if address is None:
                pytest.skip("this machine has no non-loopback address to ask from")
            remote = await http.get(f"http://{address}:{server.port}/debug/profile")
    assert remote.status_code == 403
    assert remote.json() == {
        "errors": [
            {
                "message": "the profile is served to this machine's loopback clients only",
                "extensions": {"code": "FORBIDDEN"},
            }
        ]
    }


async def test_a_process_whose_sampler_is_off_says_so() -> None:
    with serving(Sampler(ProfilerConfig(hz=0))) as server:
        async with httpx.AsyncClient(timeout=30) as http:
            got = await http.get(f"http://127.0.0.1:{server.port}/debug/profile")
    assert got.status_code == 503
    assert got.json()["errors"][0]["extensions"]["code"] == "UNAVAILABLE"
    assert "INBOXQL_PROFILE_HZ=0" in got.json()["errors"][0]["message"]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("192.0.2.2", False),
        ("fd00::2", False),
        ("", False),
        (None, False),
        ("testclient", False),
    ],
)
def test_is_loopback(host: str | None, loopback: bool) -> None:
    assert is_loopback(host) is loopback
