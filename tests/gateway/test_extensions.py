"""The schema's extension hooks: worked out once per extension class, run per operation and per subscription
event as Strawberry runs them (in order, nested, each kind of hook), without wrapping any hook anew."""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any

import pytest
import strawberry
from strawberry.extensions import SchemaExtension
from strawberry.types.execution import StreamExecutionResult

from gateway.graphql.schema import GatewaySchema

Log = list[str]


@strawberry.type
class _Query:
    @strawberry.field
    def hello(self) -> str:
        return "world"

    @strawberry.field
    def broken(self) -> str:
        raise ValueError("no")


@strawberry.type
class _Subscription:
    @strawberry.subscription
    async def count(self) -> AsyncGenerator[int, None]:
        for n in range(3):
            yield n


def _schema(log: Log) -> GatewaySchema:
    class Generator(SchemaExtension):
        def on_operation(self) -> Iterator[None]:
            log.append("operation in")
            yield
            log.append("operation out")

        def on_execute(self) -> Iterator[None]:
            log.append("execute in")
            yield
            log.append(
                f"execute out, errors: {bool(self.execution_context.result and self.execution_context.result.errors)}"
            )

        def on_stream_result(self, result: StreamExecutionResult) -> Iterator[None]:
            log.append(f"event {getattr(result, 'data', None)}")
            yield

    class AsyncGen(SchemaExtension):
        async def on_operation(self) -> AsyncIterator[None]:
            log.append("async operation in")
            yield
            log.append("async operation out")

    class Plain(SchemaExtension):
        def on_validate(self) -> None:  # type: ignore[override]
            log.append("validate")

    class Coroutine(SchemaExtension):
        async def on_parse(self) -> None:  # type: ignore[override]
            log.append("parse")

    return GatewaySchema(query=_Query, subscription=_Subscription, extensions=[Generator, AsyncGen, Plain, Coroutine])


async def test_each_kind_of_hook_runs_in_order_and_nothing_is_wrapped_per_operation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Strawberry wrapped every hook of every extension for every operation (a `contextlib.contextmanager`
    and its `functools.wraps` each, after two `inspect` checks): 7% of `{ __typename }`'s CPU. The hooks
    still run as they did: generators and async generators around the stage, nested in the extensions' order,
    plain and async functions at its start; a resolver's error reaches the hooks after it."""
    log: Log = []
    schema = _schema(log)
    first = await schema.execute("{ hello }")
    assert first.data == {"hello": "world"}
    assert log == [
        "operation in",
        "async operation in",
        "parse",
        "validate",
        "execute in",
        "execute out, errors: False",
        "async operation out",
        "operation out",
    ]
    wraps: list[object] = []
    update_wrapper = functools.update_wrapper

    def counted(*args: Any, **kwargs: Any) -> Any:
        wraps.append(kwargs.get("wrapped", args[1] if len(args) > 1 else None))
        return update_wrapper(*args, **kwargs)

    monkeypatch.setattr(functools, "update_wrapper", counted)
    log.clear()
    again = await schema.execute("{ broken }")
    assert again.errors
    assert "execute out, errors: True" in log
    assert log[0] == "operation in"
    assert log[-1] == "operation out"
    assert wraps == []


async def test_a_subscriptions_every_event_passes_its_stream_result_hooks() -> None:
    log: Log = []
    schema = _schema(log)
    stream = await schema.subscribe("subscription { count }")
    assert not isinstance(stream, strawberry.types.ExecutionResult)
    events = [result.data async for result in stream]
    assert events == [{"count": 0}, {"count": 1}, {"count": 2}]
    assert [line for line in log if line.startswith("event")] == [
        "event {'count': 0}",
        "event {'count': 1}",
        "event {'count': 2}",
    ]
