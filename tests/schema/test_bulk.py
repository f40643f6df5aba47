"""Rows written in one bulk command read back as an INSERT would have written them; refusals are SQLAlchemy's."""

from __future__ import annotations

import secrets
from datetime import datetime

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from schema import bulk
from schema.crypto import CredentialBox
from schema.models import Label, Thread, table
from schema.unit import Store
from tests.schema.support import new_account


async def test_rows_read_back_as_written_json_and_a_column_none_in_every_row(
    store: Store, credential_box: CredentialBox
) -> None:
    account_id = await new_account(store, credential_box)
    when = datetime(2026, 12, 6, 10, 0, 0, 654321)
    people = [{"name": 'Zoë "Z" O\'Neil', "address": "z@example.org"}, {"name": "", "address": "日本@example.jp"}]
    rows = [
        {
            "account_id": account_id,
            "subject": f"S{i} \\ ' \x00 ünïcode",
            "normalized_subject": f"s{i}",
            "snippet": "",
            "message_count": 0,
            "unread_count": 0,
            "starred": i % 2 == 0,
            "participants": people[: i % 3],
            "folder_ids": [i, i + 1],
            "label_ids": [],
            "last_message_at": when if i % 2 else None,
            "first_message_at": None,  # None in every row: left to the column's default
        }
        for i in range(40)
    ]
    async with store.sessions() as s, s.begin():
        assert await bulk.insert(s, table(Thread), rows)
    async with store.sessions() as s:
        found = (
            await s.execute(
                select(
                    Thread.subject,
                    Thread.participants,
                    Thread.folder_ids,
                    Thread.last_message_at,
                    Thread.first_message_at,
                    Thread.starred,
                )
                .where(Thread.account_id == account_id)
                .order_by(Thread.id)
            )
        ).all()
    assert [tuple(r) for r in found] == [
        (r["subject"], r["participants"], r["folder_ids"], r["last_message_at"], None, r["starred"]) for r in rows
    ]


async def test_a_refused_row_raises_sqlalchemys_error_and_writes_nothing(
    store: Store, credential_box: CredentialBox
) -> None:
    account_id = await new_account(store, credential_box)
    name = f"L{secrets.token_hex(3)}"
    row = {"account_id": account_id, "name": name, "kind": "keyword"}
    async with store.sessions() as s:
        with pytest.raises(IntegrityError):  # schema.retry and the folder sync's fallbacks read SQLAlchemy's errors
            async with s.begin():
                assert await bulk.insert(s, table(Label), [row, {**row, "name": name + "2"}, row])
    async with store.sessions() as s:
        assert list(await s.scalars(select(Label.name).where(Label.account_id == account_id))) == []


async def test_an_upsert_of_existing_rows_changes_only_the_columns_named(
    store: Store, credential_box: CredentialBox
) -> None:
    """As schema.db.upsert, in one bulk command: rows that all exist, given by key with the columns to change (the
    columns with defaults left out), take those values and keep the rest."""
    account_id = await new_account(store, credential_box)
    rows = [
        {
            "account_id": account_id,
            "subject": f"S{i}",
            "normalized_subject": f"s{i}",
            "snippet": "kept",
            "message_count": 2,
            "unread_count": 1,
            "starred": False,
            "participants": [],
            "folder_ids": [i],
            "label_ids": [],
        }
        for i in range(5)
    ]
    async with store.sessions() as s, s.begin():
        assert await bulk.insert(s, table(Thread), rows)
    async with store.sessions() as s:
        ids = list(await s.scalars(select(Thread.id).where(Thread.account_id == account_id).order_by(Thread.id)))
    changes = [
        {"id": tid, "account_id": account_id, "unread_count": 0, "starred": True, "label_ids": [i, 7]}
        for i, tid in enumerate(ids)
    ]
    async with store.sessions() as s, s.begin():
        assert await bulk.insert(s, table(Thread), changes, update=["unread_count", "starred", "label_ids"])
    async with store.sessions() as s:
        found = await s.execute(
            select(Thread.id, Thread.snippet, Thread.unread_count, Thread.starred, Thread.label_ids, Thread.folder_ids)
            .where(Thread.account_id == account_id)
            .order_by(Thread.id)
        )
        assert [tuple(r) for r in found] == [(tid, "kept", 0, True, [i, 7], [i]) for i, tid in enumerate(ids)]
