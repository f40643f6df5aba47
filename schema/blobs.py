"""Raw MIME, content-addressed: the SHA-256 of the raw bytes names them, zlib keeps them small (schema.packing).

A blob whose packed bytes fit in one chunk is one `mime_blobs` row. A larger one keeps its packed bytes in
`mime_blob_chunks` rows of CHUNK_BYTES each, written and read one at a time: a single row (and so a single
statement) of a 20 MiB attachment would be larger than the server's max_allowed_packet (16 MiB by default on
MariaDB, 4 MiB on older MySQL), which fails the whole transaction it is in.

Rows go in one bulk command of binary parameters where the driver and the server offer it (schema.bulk): the
packed bytes are neither escaped by the driver nor parsed back by the server.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.dialects.mysql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from schema import bulk
from schema.models import MimeBlob, MimeBlobChunk, table
from schema.packing import digest, pack, unpack

# Well under every default max_allowed_packet, even escaped (a driver may spell a byte in two).
CHUNK_BYTES = 1 << 20


class BlobCorrupt(Exception):
    """A stored blob does not hash to its name."""


async def put_many(session: AsyncSession, raws: Iterable[tuple[bytes, tuple[str, bytes] | None]]) -> None:
    """Store raw messages, each with its packed form when the caller has it already."""
    rows = []
    for raw, packed in raws:
        codec, data = packed or pack(raw)
        if len(data) > CHUNK_BYTES:
            await _put_chunked(session, digest(raw), len(raw), codec, data)
        else:
            rows.append({"sha256": digest(raw), "size": len(raw), "codec": codec, "data": data, "chunks": 0})
    if rows and not await bulk.insert(session, table(MimeBlob), rows, ignore=True):
        # Same bytes, same name: a second writer of the same blob changes nothing.
        await session.execute(insert(table(MimeBlob)).prefix_with("IGNORE"), rows)


async def _put_chunked(session: AsyncSession, sha256: bytes, size: int, codec: str, data: bytes) -> None:
    count = -(-len(data) // CHUNK_BYTES)
    done = await session.execute(
        insert(table(MimeBlob))
        .prefix_with("IGNORE")
        .values(sha256=sha256, size=size, codec=codec, data=b"", chunks=count)
    )
    if getattr(done, "rowcount", 0) != 1:  # stored already (another message, or another writer that committed first)
        return
    blob_id = await session.scalar(select(MimeBlob.id).where(MimeBlob.sha256 == sha256))
    view = memoryview(data)
    for seq in range(count):
        # One statement per chunk: a driver's executemany may join rows into one statement again.
        piece = bytes(view[seq * CHUNK_BYTES : (seq + 1) * CHUNK_BYTES])
        await session.execute(insert(table(MimeBlobChunk)).values(blob_id=blob_id, seq=seq, data=piece))


async def get(session: AsyncSession, sha256: bytes) -> bytes | None:
    row = (
        await session.execute(
            select(MimeBlob.id, MimeBlob.codec, MimeBlob.data, MimeBlob.chunks).where(MimeBlob.sha256 == sha256)
        )
    ).first()
    if row is None:
        return None
    raw = unpack(row.codec, row.data) if not row.chunks else await _get_chunked(session, row.id, row.codec, row.chunks)
    if digest(raw) != sha256:
        raise BlobCorrupt(sha256.hex())
    return raw


async def _get_chunked(session: AsyncSession, blob_id: int, codec: str, count: int) -> bytes:
    """Read a chunked blob a chunk at a time, unpacking as it goes: the packed bytes are never held whole."""
    inflate = zlib.decompressobj() if codec == "zlib" else None
    parts: list[bytes] = []
    for seq in range(count):
        piece = await session.scalar(
            select(MimeBlobChunk.data).where(MimeBlobChunk.blob_id == blob_id, MimeBlobChunk.seq == seq)
        )
        if piece is None:
            raise BlobCorrupt(f"blob {blob_id} lacks chunk {seq} of {count}")
        parts.append(inflate.decompress(piece) if inflate is not None else piece)
    if inflate is not None:
        parts.append(inflate.flush())
    return b"".join(parts)
