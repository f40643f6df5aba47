"""The sync process's operator endpoint: a small HTTP server inside the process, on loopback only.

`inboxql sync --metrics-port N` (or INBOXQL_METRICS_PORT) serves `/metrics` on 127.0.0.1:N from the sync
process's own event loop: a Starlette app under a uvicorn.Server run as a task, so it needs no thread and stops
with the process. Other operator routes (a profiler's) are passed in as Starlette routes:

```python
async with operator_endpoint(port, [Route("/debug/profile", profile)]):
    await supervisor.run_forever()
```

It listens on loopback only and asks for no token: whoever can reach it is on the machine already. The gateway
serves its own `/metrics` beside `/graphql` (gateway.app), guarded by the operator token there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Iterator, Sequence

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ops import metrics

log = logging.getLogger(__name__)

ENV = "INBOXQL_METRICS_PORT"
HOST = "127.0.0.1"


class EndpointError(Exception):
    """The operator endpoint could not start (the port is taken, or not a port)."""


def port_from_env() -> int | None:
    """INBOXQL_METRICS_PORT as a port, or None when unset or empty (the endpoint is off by default)."""
    text = os.environ.get(ENV, "").strip()
    if not text:
        return None
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise EndpointError(f"{ENV}={text!r} is not a port number")
    return int(text)


async def metrics_response(request: Request) -> Response:
    """Every metric of the process, in Prometheus's text format."""
    return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE)


def operator_app(routes: Sequence[BaseRoute] = ()) -> Starlette:
    """`/metrics` and the routes given."""
    return Starlette(routes=[Route("/metrics", metrics_response), *routes])


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to the process: Ctrl-C must stop the sync (asyncio.run's handler),
    not only this endpoint."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def operator_endpoint(
    port: int | None, routes: Sequence[BaseRoute] = (), host: str = HOST
) -> AsyncIterator[uvicorn.Server | None]:
    """Serve `operator_app(routes)` on host:port for the length of the block (None: serve nothing).

    Returns once the socket listens, so a scraper started next finds it; raises EndpointError when it cannot.
    """
    if port is None:
        yield None
        return
    config = uvicorn.Config(
        operator_app(routes), host=host, port=port, log_level="warning", access_log=False, lifespan="off"
    )
    server = _Server(config)
    # Bound and listening here, not by uvicorn: uvicorn answers a port in use with sys.exit, which would end the
    # whole process; and a socket that listens from the start queues a scrape that comes before uvicorn accepts.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(config.backlog)
    except OSError as exc:
        sock.close()
        raise EndpointError(f"the operator endpoint cannot listen on {host}:{port}: {exc.strerror}") from None
    task = asyncio.create_task(server.serve(sockets=[sock]), name="operator-endpoint")
    log.info("operator endpoint: http://%s:%d/metrics", host, port)
    try:
        yield server
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()
