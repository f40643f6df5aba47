"""The gateway's ASGI app: `create_app(settings)` builds it; `inboxql gateway` serves it with uvicorn.

Routes:
    /graphql                   GraphQL over HTTP (GET, POST), graphql-sse (Accept: text/event-stream; gateway.sse)
                               and websockets (graphql-transport-ws); GraphiQL for browsers
    /graphiql/static/...       GraphiQL's own assets (see gateway.graphiql)
    /attachments/{id}          an attachment's decoded bytes
    /messages/{id}/raw         a message's raw RFC 5322 bytes
    /uploads                   POST a file to attach to a message sendMessage sends (gateway.uploads)
    /healthz, /readyz          liveness (the process answers) and readiness (MariaDB and Redis answer;
                               with shards, each shard's answer: one down is `degraded`, not unready)
    /status, /status.json      the operator status page and the JSON it polls (operator tokens; gateway.status)
    /debug/profile             the sampler's flame graph of the last N seconds (ops.profile), to loopback clients
                               and operator tokens (gateway.operators)
    /metrics                   Prometheus metrics (ops.metrics), to loopback clients and operator tokens
                               (gateway.operators)
    /oauth2/{provider}/start   the OAuth2 consent flow: an operator's start link, the provider's callback, and
    /oauth2/{provider}/callback  the built-in page it ends on (gateway.consent)
    /oauth2/done

Every HTTP request but an upload passes the body cap first (gateway.caps.BodyLimit: 413 past max_body_bytes).
The lifespan watches the event loop for blocking calls (ops.watchdog: INBOXQL_STALL_MS), runs the stack sampler on
the loop's thread (ops.sampler; off with INBOXQL_PROFILE_HZ=0), runs webhook delivery (gateway.delivery), woken by
the fan-out's doorbell, unless GatewayConfig.webhooks is off, and prunes expired uploads (gateway.uploads).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from functools import partial
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.auth import TokenCache
from gateway.caps import AuthFailures, BodyLimit
from gateway.config import GatewayConfig
from gateway.consent import ConsentFlow
from gateway.delivery import deliverers, running_each
from gateway.downloads import Downloads
from gateway.fanout import Fanout
from gateway.graphiql import STATIC_DIR, STATIC_URL
from gateway.graphql.schema import build_schema
from gateway.http import GatewayView
from gateway.limits import RateLimiter, StreamSlots
from gateway.metrics import metrics_route
from gateway.operators import operator_guard
from gateway.services import Services
from gateway.signing import Signer
from gateway.status import StatusRoutes
from gateway.uploads import Uploads, pruning
from ops import metrics
from ops.profile import profile_routes
from ops.sampler import Sampler
from ops.watchdog import watching
from schema.crypto import CredentialBox
from schema.db import pool_use
from schema.fulltext import VocabularyCache
from schema.redisconn import connect
from schema.settings import Settings
from schema.shards import HOME, Shards
from schema.unit import Store

READY_TIMEOUT = 2.0


class Gateway(Starlette):
    """Starlette, handing a websocket on /graphql straight to the GraphQL view.

    A websocket lives for hours, and every layer it passes through stays suspended beneath it: Starlette's error
    and exception middleware, the body cap and the router held about 3.5 KB of coroutine frames per subscriber
    (tracemalloc, bench.fanout_bench), and none of them does anything for such a socket (the view accepts,
    refuses and closes it itself; the body cap is for HTTP; the websocket's own message cap is uvicorn's,
    gateway.server). Any other websocket, e.g. on a path with a root_path prefix, takes the stack as before.
    """

    def __init__(self, *, graphql_websocket: ASGIApp, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.graphql_websocket = graphql_websocket

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == "/graphql":
            scope["app"] = self
            await self.graphql_websocket(scope, receive, send)
            return
        if scope["type"] == "http":
            await super().__call__(scope, receive, _server_timing(send))
            return
        await super().__call__(scope, receive, send)


def _server_timing(send: Send) -> Send:
    """Each HTTP response says how long the gateway took to start it, from the request's arrival in the application
    (W3C Server Timing: `server-timing: app;dur=1.23, cpu;dur=0.98`, in ms): beside a client's own measure, the
    difference is what happened outside (the network, a loop busy with something else before the request was read, a
    client's own wait). `cpu` is the CPU the event loop's thread used meanwhile: the request's own work and whatever
    else the loop ran in that time; `app` well above `cpu` is waiting (the database, or the CPU given to other
    processes), `cpu` above the request's usual cost is the loop's other work or a slower CPU. Browsers' developer
    tools show both. Times are all they tell, which the client can measure anyway."""
    started = time.perf_counter()
    cpu = time.thread_time()

    async def timed(message: Message) -> None:
        if message["type"] == "http.response.start":
            spent = (time.perf_counter() - started) * 1000
            used = (time.thread_time() - cpu) * 1000
            headers = [*message.get("headers", ()), (b"server-timing", b"app;dur=%.2f, cpu;dur=%.2f" % (spent, used))]
            message = {**message, "headers": headers}
        await send(message)

    return timed


def create_app(settings: Settings, config: GatewayConfig | None = None) -> Starlette:
    config = config or GatewayConfig()
    shards = Shards.of(settings)  # one engine per shard; shard 0's is the gateway's own (schema.shards)
    engine = shards.home
    redis = connect(settings.redis_url)  # short timeouts (schema.redisconn)
    limiter = RateLimiter(
        redis, config.rate_limit_points, config.rate_limit_window_seconds, fail_open=config.rate_limit_fail_open
    )
    # Anonymous requests and introspection, per client address: counted per deployment (named by its database).
    deployment = hashlib.sha256(settings.database_url.encode()).hexdigest()[:12]
    per_address = RateLimiter(
        redis,
        config.address_rate_limit,
        config.rate_limit_window_seconds,
        fail_open=config.rate_limit_fail_open,
        prefix=f"{deployment}:",
    )
    services = Services(
        engine=engine,
        redis=redis,
        config=config,
        tokens=TokenCache(
            engine,
            config.token_cache_seconds,
            AuthFailures(config.max_auth_failures, config.auth_failure_window_seconds),
        ),
        signer=Signer(settings.key_ring(), config.download_link_seconds),
        box=CredentialBox(settings.key_ring()),
        fanout=Fanout(engine, settings.redis_url, engines=dict(shards.engines())),
        store=(home := Store(engine, redis)),
        streams=StreamSlots(config.max_streams_per_token),
        vocabulary=VocabularyCache(),
        subscriptions=StreamSlots(config.max_subscriptions_per_token),
        limiter=limiter,
        engines=dict(shards.engines()),
        stores={n: home if n == HOME else shards.store(n, redis) for n in shards.numbers},
    )
    view = GatewayView(
        build_schema(config, limiter, per_address),
        services=services,
        graphql_ide="graphiql",
        allowed_origins=config.allowed_origins,
        max_subscriptions_per_connection=config.max_subscriptions_per_connection,
        connection_init_wait_timeout=timedelta(seconds=config.ws_init_seconds),
    )
    downloads = Downloads(services)
    flow = ConsentFlow(services)
    uploads = Uploads(services)
    fanout = services.fanout
    status = StatusRoutes(services)
    sampler = Sampler(config.profiler)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def check(engine: AsyncEngine) -> str:
        try:
            async with asyncio.timeout(READY_TIMEOUT), engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:
            return type(exc).__name__
        return "ok"

    async def readyz(request: Request) -> Response:
        """Ready when shard 0 (the tokens, the doorbells) and Redis answer. Another shard that does not answer
        makes the process `degraded`, still 200: every gateway sees the same shard down, and taking them all out
        of the balancer would stop the other shards' accounts too (theirs answer SHARD_UNAVAILABLE meanwhile)."""
        others = [n for n in services.engines if n != HOME]
        answers = await asyncio.gather(check(engine), *(check(services.engines[n]) for n in others))
        checks: dict[str, object] = {"database": answers[0]}
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                await redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = type(exc).__name__
        ready = checks["database"] == "ok" and checks["redis"] == "ok"
        status = "ready" if ready else "unavailable"
        if others:
            shards = {str(n): answer for n, answer in zip(others, answers[1:], strict=True)}
            checks["shards"] = shards
            if ready and any(v != "ok" for v in shards.values()):
                status = "degraded"
        return JSONResponse({"status": status, **checks}, status_code=200 if ready else 503)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        fanout.start()  # the one doorbell subscription of this process (gateway.fanout)
        sampler.start()  # samples this loop's thread from now on
        untracks = [metrics.track_pool(partial(pool_use, e)) for e in services.engines.values()]  # every shard's
        try:
            async with (
                watching(),
                # Built off the loop: its HTTP client loads the CA certificates, ~0.2 s (ops.watchdog saw it).
                running_each(
                    await asyncio.to_thread(deliverers, services.engines, services.box, config, fanout)
                    if config.webhooks
                    else []
                ),
                pruning(list(services.engines.values()), config.upload_prune_seconds),
            ):
                yield
        finally:
            for untrack in untracks:
                untrack()
            sampler.stop()
        await services.tokens.close()
        await fanout.stop()
        await limiter.flush()
        await per_address.flush()
        await redis.aclose()
        await shards.dispose()

    routes = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        metrics_route(services),
        Route("/graphql", view, methods=["GET", "POST"]),
        WebSocketRoute("/graphql", view),
        Route("/attachments/{id}", downloads.attachment),
        Route("/messages/{id}/raw", downloads.raw),
        Route("/uploads", uploads.upload, methods=["POST"]),
        Route("/status", status.page),
        Route("/status.json", status.data),
        *profile_routes(sampler, operator_guard(services.tokens)),
        Route("/oauth2/done", flow.done),
        Route("/oauth2/{provider}/start", flow.start),
        Route("/oauth2/{provider}/callback", flow.callback),
        Mount(STATIC_URL, StaticFiles(directory=STATIC_DIR, check_dir=False), name="graphiql-static"),
    ]
    # Outside the routes, inside Starlette's error middleware: a body past the cap is a 413, never a 500.
    middleware = [Middleware(BodyLimit, limit=config.max_body_bytes, exempt=("/uploads",))]
    app = Gateway(graphql_websocket=view, routes=routes, lifespan=lifespan, middleware=middleware)
    # For tests and benchmarks that look inside a running gateway; the app itself passes `services` down.
    app.state.services = services
    app.state.sampler = sampler
    return app
