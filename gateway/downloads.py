"""Attachment and raw-message downloads: the bytes stream out of the stored raw MIME.

Either `Authorization: Bearer TOKEN` or a signed link (see gateway.signing) authenticates. A foreign id
answers exactly like a missing one (404). Bytes are served as downloads with `nosniff` and a sandboxing
CSP, so an HTML attachment cannot run in the gateway's origin.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import quote

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from gateway.auth import Viewer, bearer, client_address, deferred_response
from gateway.caps import AuthDeferred
from gateway.errors import BAD_USER_INPUT, NOT_FOUND, UNAUTHENTICATED, BadUserInput
from gateway.ids import pk_of
from gateway.services import Services
from mime import extract_part
from schema import blobs
from schema.db import session_factory
from schema.models import Attachment, Message
from schema.shards import shard_of

CHUNK = 64 * 1024


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"errors": [{"message": message, "extensions": {"code": code}}]}, status_code=status)


def _disposition(filename: str) -> str:
    ascii_name = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), CHUNK):
        yield data[start : start + CHUNK]


class Downloads:
    def __init__(self, services: Services) -> None:
        # One session factory per shard: an attachment or message is read on the shard its id names.
        self.sessions = {n: session_factory(engine) for n, engine in services.engines.items()}
        self.tokens = services.tokens
        self.signer = services.signer

    async def _viewer(self, request: Request) -> Viewer | None:
        token = bearer(request.headers)
        if token:
            return await self.tokens.viewer(token, client=client_address(request))
        q = request.query_params
        try:
            token_id, expires, signature = int(q["t"]), int(q["e"]), q["s"]
        except (KeyError, ValueError):
            return None
        if not self.signer.verify(request.url.path, token_id, expires, signature):
            return None
        return await self.tokens.viewer_by_id(token_id)

    async def attachment(self, request: Request) -> Response:
        try:
            viewer = await self._viewer(request)
        except AuthDeferred as exc:
            return deferred_response(exc)
        if viewer is None:
            return _error(401, UNAUTHENTICATED, "a valid API token or signed link is required")
        try:
            pk = pk_of(request.path_params["id"], "Attachment")
        except BadUserInput as e:
            return _error(400, BAD_USER_INPUT, e.message)
        sessions = self.sessions.get(shard_of(pk))
        if sessions is None:
            return _error(404, NOT_FOUND, "Attachment not found")
        async with sessions() as session:
            row = (
                await session.execute(
                    select(Attachment.part_id, Attachment.filename, Message.blob_sha256)
                    .join(Message, Message.id == Attachment.message_id)
                    .where(Attachment.id == pk, Message.account_id.in_(sorted(viewer.account_ids)))
                )
            ).first()
            raw = await blobs.get(session, row.blob_sha256) if row is not None else None
        part = extract_part(raw, row.part_id) if row is not None and raw is not None else None
        if row is None or part is None:
            return _error(404, NOT_FOUND, "Attachment not found")
        data, content_type, filename = part
        headers = {
            "content-disposition": _disposition(row.filename or filename or f"attachment-{pk}"),
            "content-length": str(len(data)),
            "x-content-type-options": "nosniff",
            "content-security-policy": "sandbox",
        }
        return StreamingResponse(_chunks(data), media_type=content_type or "application/octet-stream", headers=headers)

    async def raw(self, request: Request) -> Response:
        try:
            viewer = await self._viewer(request)
        except AuthDeferred as exc:
            return deferred_response(exc)
        if viewer is None:
            return _error(401, UNAUTHENTICATED, "a valid API token or signed link is required")
        try:
            pk = pk_of(request.path_params["id"], "Message")
        except BadUserInput as e:
            return _error(400, BAD_USER_INPUT, e.message)
        sessions = self.sessions.get(shard_of(pk))
        if sessions is None:
            return _error(404, NOT_FOUND, "Message not found")
        async with sessions() as session:
            sha = await session.scalar(
                select(Message.blob_sha256).where(Message.id == pk, Message.account_id.in_(sorted(viewer.account_ids)))
            )
            raw = await blobs.get(session, sha) if sha is not None else None
        if raw is None:
            return _error(404, NOT_FOUND, "Message not found")
        headers = {
            "content-disposition": _disposition(f"message-{pk}.eml"),
            "content-length": str(len(raw)),
            "x-content-type-options": "nosniff",
            "content-security-policy": "sandbox",
        }
        return StreamingResponse(_chunks(raw), media_type="message/rfc822", headers=headers)
