"""Folder mutations: create, rename, delete (IMAP CREATE, RENAME, DELETE, queued as actions).

The mirror shows the change at once; the payload names the action (poll its `state`) and the folder as it is
now. Folders with a special-use role (inbox, sent, drafts, trash, junk, archive, all, ...) are neither renamed
nor deleted, nor is a folder with one below it. Names: 1 to 255 characters, no control characters and no list
wildcards (`%`, `*`: RFC 3501 §6.3.8); under a parent, the name is one level and may not hold the delimiter.
"""

from __future__ import annotations

from typing import Any

import strawberry
from sqlalchemy import func, select
from sqlalchemy.engine import Row

from gateway.errors import BadUserInput, not_found
from gateway.graphql.context import Info
from gateway.graphql.mutations.writes import Result, Work, folder_of, write
from gateway.graphql.types.actions import CreateFolderPayload, DeleteFolderPayload, RenameFolderPayload
from gateway.graphql.types.fields import described
from schema import actions
from schema.models import Folder
from schema.shards import shard_of
from schema.unit import UnitOfWork

MAX_NAME = 255
INBOX = "INBOX"


@strawberry.input
class CreateFolderInput:
    account_id: strawberry.ID
    name: str = strawberry.field(description="The new folder's name (one level when a parent is given).")
    parent_id: strawberry.ID | None = strawberry.field(default=None, description="Create it below this folder.")
    idempotency_key: str | None = None


@strawberry.input
class RenameFolderInput:
    id: strawberry.ID
    name: str = strawberry.field(description="The new name of its last level; it stays below the same parent.")
    idempotency_key: str | None = None


@strawberry.input
class DeleteFolderInput:
    id: strawberry.ID
    idempotency_key: str | None = None


def check_name(name: str, delimiter: str | None, *, one_level: bool) -> None:
    if not name.strip():
        raise BadUserInput("a folder name may not be empty")
    if len(name) > MAX_NAME:
        raise BadUserInput(f"a folder name is at most {MAX_NAME} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F or c in "%*" for c in name):
        raise BadUserInput("a folder name may not contain control characters, % or *")
    if delimiter:
        if one_level and delimiter in name:
            raise BadUserInput(f"a name below a parent may not contain the delimiter {delimiter!r}")
        if any(not part for part in name.split(delimiter)):
            raise BadUserInput(f"a folder name may not begin or end with the delimiter {delimiter!r}, or double it")


async def _delimiter(info: Info, account_id: int) -> str | None:
    """The account's hierarchy delimiter: the one its folders use (RFC 3501 §6.3.8: one per namespace)."""
    found = await info.context.db.scalar(
        select(Folder.delimiter)
        .where(Folder.account_id == account_id, Folder.delimiter.is_not(None))
        .group_by(Folder.delimiter)
        .order_by(func.count().desc())
        .limit(1),
        shard=shard_of(account_id),
    )
    return None if found is None else str(found)


async def _refuse_taken(uow: UnitOfWork, name: str) -> None:
    # RFC 3501 §5.1: INBOX is case-insensitive; other names are compared exactly (the column is binary).
    if name.upper() == INBOX:
        raise BadUserInput("a folder named INBOX exists")
    taken = await uow.session.scalar(select(Folder.id).where(Folder.account_id == uow.account_id, Folder.name == name))
    if taken is not None:
        raise BadUserInput(f"a folder named {name!r} exists")


async def _refuse_roles(info: Info, folder: Row[Any], verb: str) -> None:
    if folder.role is not None:
        raise BadUserInput(f"the {folder.role} folder cannot be {verb}")
    if folder.delimiter:
        below = await info.context.db.scalar(
            select(Folder.role).where(
                Folder.account_id == folder.account_id,
                Folder.name.startswith(folder.name + folder.delimiter, autoescape=True),
                Folder.role.is_not(None),
            ),
            shard=shard_of(folder.account_id),
        )
        if below is not None:
            raise BadUserInput(f"the folder holds the {below} folder: it cannot be {verb}")


async def _locked(uow: UnitOfWork, folder_id: int) -> Folder:
    folder = await uow.session.get(Folder, folder_id, with_for_update=True)
    if folder is None or folder.sync_state == "deleting":
        raise not_found("Folder")
    return folder


@strawberry.type
class FolderMutations:
    @described("Create a folder (below `parentId` if given); it shows at once and is created on the server next.")
    async def create_folder(self, info: Info, input: CreateFolderInput) -> CreateFolderPayload:
        async def plan() -> tuple[int, Work]:
            account_id = info.context.account_pk(input.account_id)
            if input.parent_id is not None:
                parent = await folder_of(info, input.parent_id, account_id)
                delimiter = parent.delimiter or await _delimiter(info, account_id)
                if not delimiter:
                    raise BadUserInput("the account's folders have no hierarchy: create it without a parent")
                if "\\noinferiors" in parent.attributes.lower():
                    raise BadUserInput("the parent folder cannot hold folders (\\Noinferiors)")
                check_name(input.name, delimiter, one_level=True)
                name = parent.name + delimiter + input.name
            else:
                delimiter = await _delimiter(info, account_id)
                check_name(input.name, delimiter, one_level=False)
                name = input.name

            async def work(uow: UnitOfWork) -> Result:
                await _refuse_taken(uow, name)
                folder_id, action_id = await actions.create_folder(uow, name, delimiter)
                return {"action": action_id, "folder": folder_id}

            return account_id, work

        done = await write(info, "createFolder", input.idempotency_key, plan)
        return CreateFolderPayload(action_id=done["action"], folder_id=done["folder"])

    @described("Rename a folder (and, as IMAP does, the folders below it). Role folders are refused.")
    async def rename_folder(self, info: Info, input: RenameFolderInput) -> RenameFolderPayload:
        async def plan() -> tuple[int, Work]:
            row = await folder_of(info, input.id)
            await _refuse_roles(info, row, "renamed")
            check_name(input.name, row.delimiter, one_level=bool(row.delimiter))
            parent, sep, _ = row.name.rpartition(row.delimiter) if row.delimiter else ("", "", row.name)
            name = parent + sep + input.name

            async def work(uow: UnitOfWork) -> Result:
                folder = await _locked(uow, row.id)
                await _refuse_taken(uow, name)
                return {"action": await actions.rename_folder(uow, folder, name), "folder": folder.id}

            return int(row.account_id), work

        done = await write(info, "renameFolder", input.idempotency_key, plan)
        return RenameFolderPayload(action_id=done["action"], folder_id=done["folder"])

    @described("Delete a folder and the messages in it, on the server too. Role folders are refused.")
    async def delete_folder(self, info: Info, input: DeleteFolderInput) -> DeleteFolderPayload:
        async def plan() -> tuple[int, Work]:
            row = await folder_of(info, input.id)
            await _refuse_roles(info, row, "deleted")

            async def work(uow: UnitOfWork) -> Result:
                folder = await _locked(uow, row.id)
                return {"action": await actions.delete_folder(uow, folder), "folder": folder.id}

            return int(row.account_id), work

        done = await write(info, "deleteFolder", input.idempotency_key, plan)
        return DeleteFolderPayload(action_id=done["action"], folder_id=done["folder"])
