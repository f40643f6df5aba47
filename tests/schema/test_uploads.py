"""Uploads: the bytes once per content, only the account's own uploads read back, expired ones pruned, and a blob
unused while an upload names it or it was touched lately."""

from __future__ import annotations

import secrets
from datetime import timedelta

from sqlalchemy import delete, func, select

from schema import uploads
from schema.crypto import CredentialBox
from schema.models import Upload, UploadBlob, utcnow
from schema.unit import Store
from tests.schema.support import new_account


async def _blobs(store: Store, sha: bytes) -> int:
    async with store.sessions() as s:
        return int(await s.scalar(select(func.count()).where(UploadBlob.sha256 == sha)) or 0)


async def test_same_bytes_are_stored_once_and_read_back_only_by_their_account(
    store: Store, credential_box: CredentialBox
) -> None:
    mine, theirs = await new_account(store, credential_box), await new_account(store, credential_box)
    data = secrets.token_bytes(5000) + b"\x00" * 5000
    async with store.sessions() as s, s.begin():
        first = await uploads.put(s, mine, None, "a.bin", "application/octet-stream", data)
        second = await uploads.put(s, mine, None, "b.bin", "application/octet-stream", data)
        foreign = await uploads.put(s, theirs, None, "c.bin", "application/octet-stream", data)
    assert first.sha256 == second.sha256 == foreign.sha256
    assert await _blobs(store, first.sha256) == 1
    async with store.sessions() as s:
        found = await uploads.read(s, mine, [first.id, second.id, foreign.id, 10**12])
    assert sorted(found) == [first.id, second.id]
    assert found[first.id].data == data
    assert found[second.id].filename == "b.bin"


async def test_prune_takes_expired_uploads_and_then_their_unnamed_blobs(
    store: Store, credential_box: CredentialBox
) -> None:
    account = await new_account(store, credential_box)
    async with store.sessions() as s, s.begin():
        unused = await uploads.put(s, account, None, "unused.txt", "text/plain", b"unused " + secrets.token_bytes(8))
        used = await uploads.put(s, account, None, "used.txt", "text/plain", b"used " + secrets.token_bytes(8))
        await uploads.keep_until(s, [used.id], utcnow() + timedelta(days=3))
    # Two days on: the unused upload expired; its blob goes too once untouched for the grace period.
    async with store.sessions() as s, s.begin():
        await uploads.prune(s, utcnow() + timedelta(days=2))
    async with store.sessions() as s:
        left = set(await s.scalars(select(Upload.id).where(Upload.account_id == account)))
    assert left == {used.id}
    assert await _blobs(store, unused.sha256) == 0
    assert await _blobs(store, used.sha256) == 1
    # A blob nobody names but that was written again just now (an upload on its way) is spared.
    async with store.sessions() as s, s.begin():
        await uploads.prune(s, utcnow() + timedelta(days=4))
    assert await _blobs(store, used.sha256) == 0
    async with store.sessions() as s, s.begin():
        again = await uploads.put(s, account, None, "again.txt", "text/plain", b"again")
        await s.execute(delete(Upload).where(Upload.id == again.id))
        await uploads.prune(s, utcnow())
    assert await _blobs(store, again.sha256) == 1
