"""Errors a client can see. Every GraphQL error carries ``extensions.code``:

```
GatewayError                 (never raised itself)
├── Unauthenticated          UNAUTHENTICATED  no token, or a token that is unknown or revoked
├── Forbidden                FORBIDDEN        the token may not do this (e.g. introspection switched off)
├── NotFound                 NOT_FOUND        missing, or belongs to an account the token does not cover
├── BadUserInput             BAD_USER_INPUT   malformed ids, cursors, arguments; parse and validation errors
│   └── CostExceeded         BAD_USER_INPUT   the query's computed cost is above the maximum
├── CursorExpired            CURSOR_EXPIRED   a change cursor older than the change log keeps: re-read
├── ShardUnavailable         SHARD_UNAVAILABLE  the database server holding these accounts cannot be reached
│                                             (extensions.shard: its number); other shards' accounts answer
├── PersistedQueryNotFound   PERSISTED_QUERY_NOT_FOUND  no document is registered under that hash: send it once
└── RateLimited              RATE_LIMITED     the token spent its budget for the current window
anything else                INTERNAL         masked to "Internal server error" and logged with its traceback
```

A foreign object reads exactly like a missing one (NOT_FOUND, same message), so ids leak nothing.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from graphql import GraphQLError

log = logging.getLogger(__name__)

UNAUTHENTICATED = "UNAUTHENTICATED"
FORBIDDEN = "FORBIDDEN"
NOT_FOUND = "NOT_FOUND"
BAD_USER_INPUT = "BAD_USER_INPUT"
RATE_LIMITED = "RATE_LIMITED"
INTERNAL = "INTERNAL"
CURSOR_EXPIRED = "CURSOR_EXPIRED"
SHARD_UNAVAILABLE = "SHARD_UNAVAILABLE"
PERSISTED_QUERY_NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"  # Apollo's code, which persisted-query links look for

INTERNAL_MESSAGE = "Internal server error"


class GatewayError(Exception):
    code: ClassVar[str] = INTERNAL

    def __init__(self, message: str, **extensions: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extensions = extensions


class Unauthenticated(GatewayError):
    code = UNAUTHENTICATED


class Forbidden(GatewayError):
    code = FORBIDDEN


class NotFound(GatewayError):
    code = NOT_FOUND


class BadUserInput(GatewayError):
    code = BAD_USER_INPUT


class CostExceeded(BadUserInput):
    pass


class CursorExpired(GatewayError):
    code = CURSOR_EXPIRED


class ShardUnavailable(GatewayError):
    code = SHARD_UNAVAILABLE

    def __init__(self, shard: int) -> None:
        super().__init__(f"the accounts of shard {shard} are unavailable: its database cannot be reached", shard=shard)


class RateLimited(GatewayError):
    code = RATE_LIMITED


class PersistedQueryNotFound(GatewayError):
    code = PERSISTED_QUERY_NOT_FOUND


def not_found(kind: str) -> NotFound:
    return NotFound(f"{kind} not found")


CODES = frozenset(
    {
        UNAUTHENTICATED,
        FORBIDDEN,
        NOT_FOUND,
        BAD_USER_INPUT,
        RATE_LIMITED,
        INTERNAL,
        CURSOR_EXPIRED,
        SHARD_UNAVAILABLE,
        PERSISTED_QUERY_NOT_FOUND,
    }
)
_CLIENT_FAULTS = (ValueError, TypeError, OverflowError)


def _root_cause(error: GraphQLError) -> BaseException | None:
    cause: BaseException | None = error.original_error
    while isinstance(cause, GraphQLError) and cause.original_error is not None:
        cause = cause.original_error
    return cause


def coded(error: GraphQLError) -> GraphQLError:
    """The error as a client sees it: with extensions.code, and masked unless we raised it on purpose.

    Errors before execution (no path: syntax, validation, variable coercion) are the request's fault;
    errors inside a resolver are either ours to tell (a GatewayError) or a bug, masked and logged.
    """
    extensions = dict(error.extensions or {})
    if extensions.get("code") in CODES:
        return error
    cause = _root_cause(error)
    if isinstance(cause, GatewayError):
        code, message = cause.code, cause.message
        extensions.update(cause.extensions)
    elif cause is None or isinstance(cause, GraphQLError) or (error.path is None and isinstance(cause, _CLIENT_FAULTS)):
        code, message = BAD_USER_INPUT, error.message
    else:
        code, message = INTERNAL, INTERNAL_MESSAGE
        log.error("unexpected error at %s", error.path, exc_info=(type(cause), cause, cause.__traceback__))
    extensions["code"] = code
    return GraphQLError(
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=None,
        extensions=extensions,
    )


def is_request_error(errors: list[GraphQLError] | None, data: object) -> bool:
    """True when the request failed before execution (GraphQL over HTTP: then the response has no data)."""
    return bool(errors) and data is None and all(e.path is None for e in errors or ())


def response_body(
    errors: list[GraphQLError] | None, data: object, extensions: dict[str, Any] | None
) -> tuple[dict[str, Any], list[GraphQLError]]:
    """A result as GraphQL over HTTP shapes it (and graphql-sse, which follows it): coded errors, and no `data`
    when the request failed before execution. Also the coded errors, for the status code."""
    coded_errors = [coded(e) for e in errors or ()]
    body: dict[str, Any] = {}
    if not is_request_error(coded_errors, data):
        body["data"] = data
    if coded_errors:
        body["errors"] = [e.formatted for e in coded_errors]
    if extensions:
        body["extensions"] = extensions
    return body, coded_errors


def http_status(errors: list[GraphQLError]) -> int:
    codes = {(e.extensions or {}).get("code") for e in errors}
    for code, status in ((RATE_LIMITED, 429), (UNAUTHENTICATED, 401), (FORBIDDEN, 403), (INTERNAL, 500)):
        if code in codes:
            return status
    return 400
