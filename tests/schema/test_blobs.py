"""Raw messages larger than a chunk are stored in chunk rows and read back byte for byte."""

from __future__ import annotations

import random

from sqlalchemy import delete, func, select

from schema import blobs, packing
from schema.models import MimeBlob, MimeBlobChunk
from schema.unit import Store


async def test_a_large_blob_is_stored_in_chunks_and_read_back_exactly(store: Store) -> None:
    raw = random.Random(8).randbytes(3 * blobs.CHUNK_BYTES + 123)  # incompressible: stored as is
    small = b"Subject: small\r\n\r\nhello\r\n" * 10
    sha = packing.digest(raw)
    async with store.sessions() as s, s.begin():
        await blobs.put_many(s, [(raw, None), (small, None)])
        await blobs.put_many(s, [(raw, None)])  # the same bytes again change nothing
    async with store.sessions() as s:
        row = (await s.execute(select(MimeBlob.id, MimeBlob.chunks, MimeBlob.data).where(MimeBlob.sha256 == sha))).one()
        assert (row.chunks, row.data) == (4, b"")
        sizes = list(
            await s.scalars(
                select(func.length(MimeBlobChunk.data)).where(MimeBlobChunk.blob_id == row.id).order_by("seq")
            )
        )
        assert sizes == [blobs.CHUNK_BYTES] * 3 + [len(packing.pack(raw)[1]) - 3 * blobs.CHUNK_BYTES]
        assert await blobs.get(s, sha) == raw
        assert await blobs.get(s, packing.digest(small)) == small
    async with store.sessions() as s, s.begin():
        await s.execute(delete(MimeBlob).where(MimeBlob.sha256 == sha))
    async with store.sessions() as s:
        assert (
            await s.scalar(select(func.count()).select_from(MimeBlobChunk).where(MimeBlobChunk.blob_id == row.id)) == 0
        )


async def test_a_compressible_large_blob_is_chunked_after_packing(store: Store) -> None:
    rng = random.Random(9)
    words = [rng.randbytes(4).hex().encode() for _ in range(5000)]
    raw = b"\r\n".join(b" ".join(rng.choices(words, k=12)) for _ in range(60_000))  # 6 MB of text, packs to ~2
    codec, packed = packing.pack(raw)
    assert codec == "zlib"
    async with store.sessions() as s, s.begin():
        await blobs.put_many(s, [(raw, (codec, packed))])
    async with store.sessions() as s:
        chunks = await s.scalar(select(MimeBlob.chunks).where(MimeBlob.sha256 == packing.digest(raw)))
        assert chunks == -(-len(packed) // blobs.CHUNK_BYTES)
        assert await blobs.get(s, packing.digest(raw)) == raw


async def test_many_blobs_of_every_byte_are_stored_exactly_within_the_transaction(store: Store) -> None:
    rng = random.Random(10)
    # Every byte value, quotes, backslashes and NULs: what escaping would have to get right, sent unescaped.
    raws = [bytes(range(256)) * 3 + rng.randbytes(rng.randrange(1, 4000)) + b"'\\\x00\"" for _ in range(300)]
    raws.append(raws[0])  # the same bytes twice in one call: stored once
    async with store.sessions() as s:
        before = int(await s.scalar(select(func.count()).select_from(MimeBlob)) or 0)
    async with store.sessions() as s, s.begin():
        await blobs.put_many(s, [(raw, None) for raw in raws])
    async with store.sessions() as s:
        assert await s.scalar(select(func.count()).select_from(MimeBlob)) == before + 300
        for raw in raws:
            assert await blobs.get(s, packing.digest(raw)) == raw
    undone = [rng.randbytes(100) for _ in range(20)]
    async with store.sessions() as s, s.begin():
        await blobs.put_many(s, [(raw, None) for raw in undone])
        await s.rollback()
    async with store.sessions() as s:
        assert all([await blobs.get(s, packing.digest(raw)) is None for raw in undone])
        assert await s.scalar(select(func.count()).select_from(MimeBlob)) == before + 300
