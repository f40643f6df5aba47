"""`inboxql gateway`: one uvicorn worker serving create_app(settings).

`uvicorn_config` is the one place the gateway's uvicorn settings are made (the command and the tests' servers
use it): the concurrency limit, the websocket protocol (gateway.wsprotocol) and message cap, and an access log
that never holds a token (a token in a URL, e.g. an old GraphiQL link's ``?headers=``, is written as
``iqt_[redacted]``).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Generator

import uvicorn
from starlette.types import ASGIApp

from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.wsprotocol import LeanWebSocketProtocol
from schema.settings import Settings

_TOKEN = re.compile(r"iqt_[A-Za-z0-9_-]+")
_HEADERS_PARAM = re.compile(r"([?&]headers=)[^&#]*")


def redact(text: str) -> str:
    """`text` (a request's path and query) without API tokens or a GraphiQL ``headers`` parameter."""
    return _TOKEN.sub("iqt_[redacted]", _HEADERS_PARAM.sub(r"\1[redacted]", text))


class RedactTokens(logging.Filter):
    """uvicorn's access log lines are (client, method, path with query, HTTP version, status): the path is
    written without tokens."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


def _redact_access_log() -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactTokens) for f in access.filters):
        access.addFilter(RedactTokens())


def uvicorn_config(
    app: ASGIApp, config: GatewayConfig, host: str, port: int, *, log_level: str, access_log: bool
) -> uvicorn.Config:
    built = uvicorn.Config(
        app,
        host=host,
        port=port,
        proxy_headers=True,
        server_header=False,
        log_level=log_level,
        access_log=access_log,
        # uvicorn's websockets-sansio protocol, holding less per idle socket (gateway.wsprotocol).
        ws=LeanWebSocketProtocol,
        ws_per_message_deflate=config.ws_compression,
        # A websocket message past the body cap closes the socket with 1009 (message too big).
        ws_max_size=config.max_body_bytes,
        # Beyond this many connections and tasks at once, uvicorn answers 503 instead of taking more.
        limit_concurrency=config.max_concurrency,
        # Open event streams and websockets do not end by themselves: cancel them after this long.
        timeout_graceful_shutdown=10,
    )
    _redact_access_log()  # after uvicorn.Config, which configures logging
    return built


def _server(settings: Settings, host: str, port: int, *, log_level: str, access_log: bool) -> uvicorn.Server:
    config = GatewayConfig.from_env()
    app = create_app(settings, config)
    return uvicorn.Server(uvicorn_config(app, config, host, port, log_level=log_level, access_log=access_log))


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000, *, access_log: bool = True) -> None:
    _server(settings, host, port, log_level="info", access_log=access_log).run()


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server inside an event loop of the caller's, who owns SIGINT and SIGTERM and stops it by setting
    `should_exit` (uvicorn's own handlers would take the signals over while it serves and raise them again when
    it is done, into whatever the caller was doing then)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def server(settings: Settings, host: str = "127.0.0.1", port: int = 8000) -> uvicorn.Server:
    """A uvicorn server to run inside an event loop of the caller's (`await server(...).serve()`); the caller
    stops it with `should_exit = True`."""
    config = GatewayConfig.from_env()
    app = create_app(settings, config)
    return EmbeddedServer(uvicorn_config(app, config, host, port, log_level="warning", access_log=False))
