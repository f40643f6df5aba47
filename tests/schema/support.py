"""Helpers of the schema tests: an account and a folder written through the write API."""

from __future__ import annotations

import secrets

from schema import accounts, folders
from schema.crypto import CredentialBox
from schema.unit import Store


async def new_account(store: Store, box: CredentialBox) -> int:
    user = f"u{secrets.token_hex(4)}"
    endpoint = accounts.ImapEndpoint("127.0.0.1", 143, "none", user)
    return await accounts.create(store, box, f"{user}@example.org", endpoint, "password")


async def new_folder(store: Store, account_id: int, name: str = "INBOX") -> int:
    async with store.unit(account_id) as uow:
        folder = await folders.create(uow, folders.Discovered(name, "/", (), None))
    return folder.id
