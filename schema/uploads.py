"""Uploads: files a client sends before the message that attaches them (the gateway's `POST /uploads`).

```
put(account, token, filename, type, bytes)   the bytes once per content (upload_blobs, by SHA-256, zlib),
                                              a row per upload naming them; kept KEEP after the upload
read(account, ids)                            the uploads of that account with their bytes (others: missing)
keep_until(ids, when)                         a send that used them keeps them until `when` (its time + KEEP)
prune(now)                                    expired uploads, then blobs no upload names (untouched a while)
```

An upload belongs to an account, not to the token that made it: any token of the account may attach it, no
other may see it. The bytes are not mime_blobs: those go when no message holds them, and an upload may well
hold the same bytes as a mirrored message (a forwarded .eml).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, exists, select, update
from sqlalchemy.dialects.mysql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from schema.blobs import BlobCorrupt
from schema.models import Upload, UploadBlob, table, utcnow
from schema.packing import digest, pack, unpack

# How long an upload is kept after it was made, and after the send that used it last.
KEEP = timedelta(days=1)
# A blob written or written again this recently is never pruned: an upload of the same bytes may be committing.
BLOB_GRACE = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Uploaded:
    """An upload with its bytes."""

    id: int
    filename: str
    content_type: str
    data: bytes


async def put(
    session: AsyncSession, account_id: int, token_id: int | None, filename: str, content_type: str, data: bytes
) -> Upload:
    """Store the bytes (once per content) and a row naming them; the caller commits."""
    sha = digest(data)
    now = utcnow()
    codec, packed = pack(data)
    stmt = insert(table(UploadBlob)).values(sha256=sha, size=len(data), codec=codec, data=packed, touched_at=now)
    # Same bytes, same name: a second upload of them only marks the blob as wanted again.
    await session.execute(stmt.on_duplicate_key_update(touched_at=now))
    upload = Upload(
        account_id=account_id,
        token_id=token_id,
        filename=filename,
        content_type=content_type,
        size=len(data),
        sha256=sha,
        created_at=now,
        expires_at=now + KEEP,
    )
    session.add(upload)
    await session.flush()
    return upload


async def read(session: AsyncSession, account_id: int, ids: Sequence[int]) -> dict[int, Uploaded]:
    """The account's uploads among `ids`, with their bytes; an id of another account (or gone) is left out."""
    if not ids:
        return {}
    rows = await session.execute(
        select(Upload.id, Upload.filename, Upload.content_type, Upload.sha256, UploadBlob.codec, UploadBlob.data)
        .join(UploadBlob, UploadBlob.sha256 == Upload.sha256)
        .where(Upload.id.in_(list(ids)), Upload.account_id == account_id)
    )
    found: dict[int, Uploaded] = {}
    for r in rows:
        data = unpack(r.codec, r.data)
        if digest(data) != r.sha256:
            raise BlobCorrupt(r.sha256.hex())
        found[r.id] = Uploaded(r.id, r.filename, r.content_type, data)
    return found


async def keep_until(session: AsyncSession, ids: Sequence[int], when: datetime) -> None:
    """Keep the uploads at least until `when` (naive UTC): a send that used them adds KEEP to its time."""
    if ids:
        await session.execute(
            update(Upload).where(Upload.id.in_(list(ids)), Upload.expires_at < when).values(expires_at=when)
        )


async def prune(session: AsyncSession, now: datetime | None = None) -> tuple[int, int]:
    """Delete expired uploads, then the blobs no upload names that nobody touched for BLOB_GRACE.

    (uploads, blobs) deleted. Safe to run from every gateway process at once."""
    now = now or utcnow()
    uploads = await session.execute(delete(Upload).where(Upload.expires_at < now))
    named = exists().where(Upload.sha256 == UploadBlob.sha256)
    blobs = await session.execute(delete(UploadBlob).where(UploadBlob.touched_at < now - BLOB_GRACE, ~named))
    return int(getattr(uploads, "rowcount", 0)), int(getattr(blobs, "rowcount", 0))
