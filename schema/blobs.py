"""Raw MIME, content-addressed: the SHA-256 of the raw bytes names them, zlib keeps them small.

A blob whose packed bytes fit in one chunk is one `mime_blobs` row. A larger one keeps its packed bytes in
`mime_blob_chunks` rows of CHUNK_BYTES each, written and read one at a time: a single row (and so a single
statement) of a 20 MiB attachment would be larger than the server's max_allowed_packet (16 MiB by default on
MariaDB, 4 MiB on older MySQL), which fails the whole transaction it is in.

Rows are sent as a prepared statement's binary parameters in one MariaDB bulk command where the driver and the
server offer it (asyncmy's COM_STMT_BULK_EXECUTE): spelled into an INSERT instead, the packed bytes were
escaped by the driver and parsed back by the server, the largest statement of an initial sync (BENCHMARKS.md).
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

from asyncmy.errors import NotSupportedError
from sqlalchemy import select
from sqlalchemy.dialects.mysql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from schema.models import MimeBlob, MimeBlobChunk, table

# Well under every default max_allowed_packet, even escaped (a driver may spell a byte in two).
CHUNK_BYTES = 1 << 20


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
        if len(data) > CHUNK_BYTES:
            await _put_chunked(session, digest(raw), len(raw), codec, data)
        else:
            rows.append({"sha256": digest(raw), "size": len(raw), "codec": codec, "data": data, "chunks": 0})
    if rows and not await _put_bulk(session, rows):
        # Same bytes, same name: a second writer of the same blob changes nothing.
        await session.execute(insert(table(MimeBlob)).prefix_with("IGNORE"), rows)


_COLUMNS = ("sha256", "size", "codec", "data", "chunks")
_BULK_INSERT = f"INSERT IGNORE INTO mime_blobs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"


async def _put_bulk(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> bool:
    """The rows in one bulk command of binary parameters, on the session's connection and transaction; False
    (nothing sent) where the driver or the server cannot, and the caller sends an INSERT instead."""
    raw = await (await session.connection()).get_raw_connection()
    driver = raw.driver_connection
    if driver is None or not hasattr(driver, "prepare"):  # another driver than asyncmy
        return False
    statement = await driver.prepare(_BULK_INSERT)
    try:
        await statement.execute_bulk([tuple(row[c] for c in _COLUMNS) for row in rows])
    except (NotSupportedError, ValueError):  # raised before anything is sent: no bulk here, or rows unfit for it
        return False
    finally:
        await statement.close()
    return True


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
