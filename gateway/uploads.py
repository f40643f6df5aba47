"""`POST /uploads`: a file to attach to a message sendMessage will send (schema.uploads keeps it).

```
POST /uploads?accountId=QWNjb3VudDox&filename=Übersicht.pdf      (filename percent-encoded in the URL)
Authorization: Bearer iqt_...
Content-Type: application/pdf                                    (the attachment's type; parameters dropped)
<the raw bytes>

201 {"id": "VXBsb2FkOjc", "size": 48213, "filename": "Übersicht.pdf", "contentType": "application/pdf"}
```

`accountId` may be left out when the token grants one account. Errors are JSON like GraphQL's
(`{"errors": [{"message", "extensions": {"code"}}]}`): 401 UNAUTHENTICATED (no or a bad token; signed links do
not upload), 403 FORBIDDEN (a read-only token), 404 NOT_FOUND (an account the token does not grant), 400
BAD_USER_INPUT (a bad filename or content type), 413 BAD_USER_INPUT (more than
INBOXQL_GATEWAY_MAX_UPLOAD_BYTES: refused from Content-Length before the body is read, or as soon as a body
without one passes the limit), 415 BAD_USER_INPUT (multipart/form-data: send the file's own bytes).

An upload is kept a day, and a day after the sendAt of the last send that attached it; every gateway process
prunes expired ones (`pruning`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Sequence

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from gateway.auth import bearer, client_address, deferred_response
from gateway.caps import AuthDeferred
from gateway.errors import BAD_USER_INPUT, FORBIDDEN, NOT_FOUND, UNAUTHENTICATED, BadUserInput
from gateway.ids import pk_of, to_global
from gateway.services import Services
from schema import uploads
from schema.db import session_factory
from schema.shards import shard_of

log = logging.getLogger(__name__)

MAX_FILENAME = 255
DEFAULT_TYPE = "application/octet-stream"
# RFC 2045 §5.1: type "/" subtype, both tokens.
_CONTENT_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")
# A filename goes into a header (RFC 2231): no controls or line breaks of any kind, no path.
_NOT_IN_A_FILENAME = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029/\\]")


def _error(status: int, code: str, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="inboxql"'} if status == 401 else None
    return JSONResponse(
        {"errors": [{"message": message, "extensions": {"code": code}}]}, status_code=status, headers=headers
    )


class TooLarge(Exception):
    pass


def check_filename(name: str) -> str:
    name = name.strip()
    if len(name) > MAX_FILENAME:
        raise BadUserInput(f"filename: at most {MAX_FILENAME} characters")
    if _NOT_IN_A_FILENAME.search(name):
        raise BadUserInput("filename: no control characters, line breaks or path separators")
    return name


def check_content_type(header: str | None) -> str:
    value = (header or "").partition(";")[0].strip().lower() or DEFAULT_TYPE
    if not _CONTENT_TYPE.fullmatch(value):
        raise BadUserInput(f"Content-Type: {value[:64]!r} is not type/subtype")
    return value


async def _body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it passes `limit` (what Content-Length announces is checked first)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadUserInput("Content-Length is not a number")
        if int(declared) > limit:
            raise TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


class Uploads:
    def __init__(self, services: Services) -> None:
        # An upload is stored on its account's shard, beside the messages that will carry it.
        self.sessions = {n: session_factory(engine) for n, engine in services.engines.items()}
        self.tokens = services.tokens
        self.limit = services.config.max_upload_bytes

    async def upload(self, request: Request) -> Response:
        token = bearer(request.headers)
        try:
            viewer = await self.tokens.viewer(token, client=client_address(request)) if token else None
        except AuthDeferred as exc:
            return deferred_response(exc)
        if viewer is None:
            return _error(401, UNAUTHENTICATED, "a valid API token is required (Authorization: Bearer TOKEN)")
        if viewer.read_only:
            return _error(403, FORBIDDEN, "this token is read-only: it may not upload")
        q = request.query_params
        try:
            if "accountId" in q:
                account_id = pk_of(q["accountId"], "Account")
                if account_id not in viewer.account_ids:
                    return _error(404, NOT_FOUND, "Account not found")
            elif len(viewer.account_ids) == 1:
                [account_id] = viewer.account_ids
            else:
                raise BadUserInput("accountId: which account's upload is it? (the token grants several)")
            filename = check_filename(q.get("filename", ""))
            content_type = check_content_type(request.headers.get("content-type"))
            if content_type.startswith("multipart/"):
                # An attachment cannot be multipart (RFC 2046 §5.1), and forms are not taken: the file's bytes.
                return _error(415, BAD_USER_INPUT, "Content-Type: send the file's own bytes, not a multipart body")
            data = await _body(request, self.limit)
        except BadUserInput as exc:
            return _error(400, BAD_USER_INPUT, exc.message)
        except TooLarge:
            return _error(413, BAD_USER_INPUT, f"an upload is at most {self.limit} bytes")
        except ClientDisconnect:
            return _error(400, BAD_USER_INPUT, "the body was cut off")
        sessions = self.sessions.get(shard_of(account_id))
        if sessions is None:  # granted, but on a shard this gateway is not configured with
            return _error(404, NOT_FOUND, "Account not found")
        async with sessions() as session, session.begin():
            upload = await uploads.put(session, account_id, viewer.token_id, filename, content_type, data)
        body = {
            "id": to_global("Upload", upload.id),
            "size": upload.size,
            "filename": upload.filename,
            "contentType": upload.content_type,
        }
        return JSONResponse(body, status_code=201)


async def prune_forever(engines: Sequence[AsyncEngine], every: float) -> None:
    """Prune every shard's expired uploads (one shard failing does not stop the others')."""
    factories = [session_factory(engine) for engine in engines]
    while True:
        for sessions in factories:
            try:
                async with sessions() as session, session.begin():
                    gone, blobs = await uploads.prune(session)
                if gone or blobs:
                    log.info("pruned %d expired uploads and %d unused blobs", gone, blobs)
            except Exception:
                log.exception("pruning uploads failed; again in %.0f s", every)
        await asyncio.sleep(every)


@contextlib.asynccontextmanager
async def pruning(engines: Sequence[AsyncEngine], every: float) -> AsyncIterator[None]:
    """Prune expired uploads for the life of the block (every `every` seconds; 0: not at all)."""
    if every <= 0:
        yield
        return
    task = asyncio.create_task(prune_forever(engines, every), name="upload-pruning")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
