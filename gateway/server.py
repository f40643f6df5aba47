"""`inboxql gateway`: one uvicorn worker serving create_app(settings)."""

from __future__ import annotations

import uvicorn

from gateway.app import create_app
from gateway.config import GatewayConfig
from schema.settings import Settings


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000, *, access_log: bool = True) -> None:
    app = create_app(settings, GatewayConfig.from_env())
    uvicorn.run(
        app, host=host, port=port, proxy_headers=True, server_header=False, log_level="info", access_log=access_log
    )


def server(settings: Settings, host: str = "127.0.0.1", port: int = 8000) -> uvicorn.Server:
    """A uvicorn server to run inside an event loop of the caller's (`await server(...).serve()`)."""
    app = create_app(settings, GatewayConfig.from_env())
    config = uvicorn.Config(
        app, host=host, port=port, proxy_headers=True, server_header=False, log_level="warning", access_log=False
    )
    return uvicorn.Server(config)
