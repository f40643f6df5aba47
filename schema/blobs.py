"""Raw MIME, content-addressed: the SHA-256 of the raw bytes names them, zlib keeps them small."""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.dialects.mysql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from schema.models import MimeBlob, table


class BlobCorrupt(Exception):
    """A stored blob does not hash to its name."""


def digest(raw: bytes) -> bytes:
    return hashlib.sha256(raw).digest()


def pack(raw: bytes) -> tuple[str, bytes]:
    """Level 1 keeps most of the gain of level 6 (mail is text and base64) at a fraction of the CPU."""
    packed = zlib.compress(raw, 1)
    if len(packed) < len(raw):
        return "zlib", packed
    return "raw", raw


def unpack(codec: str, data: bytes) -> bytes:
    return zlib.decompress(data) if codec == "zlib" else data


async def put_many(session: AsyncSession, raws: Iterable[tuple[bytes, tuple[str, bytes] | None]]) -> None:
    """Store raw messages, each with its packed form when the caller has it already."""
    rows = []
    for raw, packed in raws:
        codec, data = packed or pack(raw)
        rows.append({"sha256": digest(raw), "size": len(raw), "codec": codec, "data": data})
    if rows:
        # Same bytes, same name: a second writer of the same blob changes nothing.
        await session.execute(insert(table(MimeBlob)).prefix_with("IGNORE"), rows)


async def get(session: AsyncSession, sha256: bytes) -> bytes | None:
    row = (await session.execute(select(MimeBlob.codec, MimeBlob.data).where(MimeBlob.sha256 == sha256))).first()
    if row is None:
        return None
    raw = unpack(row.codec, row.data)
    if digest(raw) != sha256:
        raise BlobCorrupt(sha256.hex())
    return raw
