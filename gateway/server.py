"""`inboxql gateway`: one uvicorn worker serving create_app(settings)."""

from __future__ import annotations

import uvicorn

from gateway.app import create_app
from gateway.config import GatewayConfig
from schema.settings import Settings


def _server(settings: Settings, host: str, port: int, *, log_level: str, access_log: bool) -> uvicorn.Server:
    config = GatewayConfig.from_env()
    return uvicorn.Server(
        uvicorn.Config(
            create_app(settings, config),
            host=host,
            port=port,
            proxy_headers=True,
            server_header=False,
            log_level=log_level,
            access_log=access_log,
            ws_per_message_deflate=config.ws_compression,
            # Open event streams and websockets do not end by themselves: cancel them after this long.
            timeout_graceful_shutdown=10,
        )
    )


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000, *, access_log: bool = True) -> None:
    _server(settings, host, port, log_level="info", access_log=access_log).run()


def server(settings: Settings, host: str = "127.0.0.1", port: int = 8000) -> uvicorn.Server:
    """A uvicorn server to run inside an event loop of the caller's (`await server(...).serve()`)."""
    return _server(settings, host, port, log_level="warning", access_log=False)
