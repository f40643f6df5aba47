"""The gateway's side of the metrics (ops.metrics): `/metrics` for operators, and what GraphQL operations count.

`/metrics` answers loopback clients without a token (Prometheus on the same host) and operator tokens
(`inboxql token create --operator`), as `/debug/profile` does (gateway.operators); anyone else gets a JSON error
like the API's: 401 without a valid token, 403 with a token of another scope (from loopback too). A reverse proxy
in front must pass the client's address on (X-Forwarded-For, which uvicorn's proxy_headers reads, as the
per-address rate limits need anyway), or every client looks local.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from gateway.operators import operator_guard
from gateway.services import Services
from ops import metrics


def metrics_route(services: Services) -> Route:
    """GET /metrics: the process's metrics in Prometheus's text format, to loopback clients and operators."""

    guard = operator_guard(services.tokens)

    async def endpoint(request: Request) -> Response:
        refused = await guard(request)
        if refused is not None:
            return refused
        return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE)

    return Route("/metrics", endpoint)


def _operation(extension: SchemaExtension) -> str:
    """The operation's type as a label value: "invalid" when no operation could be read from the document."""
    try:
        kind = extension.execution_context.operation_type
    except Exception:  # a document that does not parse, or names no operation it holds
        return "invalid"
    return str(kind.value)  # query, mutation, subscription


class OperationMetrics(SchemaExtension):
    """Counts every operation by type and outcome, times queries and mutations, and keeps the subscription gauge.

    A subscription's operation lasts as long as the subscription (it ends when the client stops it or its socket
    closes), so it is counted when it starts and held in inboxql_graphql_subscribers until then; its duration is
    not a latency and is not timed.
    """

    def __init__(self) -> None:
        self.subscribed = False

    async def on_operation(self) -> AsyncIterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            if self.subscribed:
                metrics.SUBSCRIBERS.dec()
            else:
                kind = _operation(self)
                result = self.execution_context.result
                outcome = "error" if result is None or getattr(result, "errors", None) else "ok"
                metrics.GRAPHQL_REQUESTS.labels(kind, outcome).inc()
                if kind in ("query", "mutation"):
                    metrics.GRAPHQL_LATENCY.labels(kind).observe(time.perf_counter() - started)

    async def on_execute(self) -> AsyncIterator[None]:
        ec = self.execution_context
        if ec.operation_type is OperationType.SUBSCRIPTION and ec.result is None:
            self.subscribed = True
            metrics.SUBSCRIBERS.inc()
            metrics.GRAPHQL_REQUESTS.labels("subscription", "ok").inc()
        yield
