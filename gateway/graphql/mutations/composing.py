"""What the mutations that compose mail (sending, drafts) check alike, before mime.compose sees anything.

Sizes and encodability of the fields a client types, and the message a reply or a forward names: one of the
token's messages (NOT_FOUND otherwise, as for reads) and of the account that writes (BAD_USER_INPUT otherwise).
What makes a header unsafe (a line break, a bad address) is mime.compose's to refuse.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import strawberry
from sqlalchemy import select
from sqlalchemy.engine import Row

from gateway.errors import BadUserInput, not_found
from gateway.graphql.context import Info
from gateway.ids import pk_of, upload_pk
from mime.compose import Attachment
from schema import uploads
from schema.models import Message, Upload
from schema.shards import shard_of
from schema.unit import UnitOfWork

MAX_SUBJECT = 2000
MAX_NAME = 256
MAX_ADDRESS = 320  # RFC 5321 §4.5.3.1: 64 + "@" + 255
MAX_ATTACHMENTS = 50


@strawberry.input(description="A mailbox: an address and, optionally, a display name.")
class AddressInput:
    address: str
    name: str | None = None


def check_text(field: str, value: str, limit: int) -> str:
    """The value, when it is at most `limit` characters of text that UTF-8 can carry (no lone surrogate)."""
    if len(value) > limit:
        raise BadUserInput(f"{field}: at most {limit} characters", field=field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadUserInput(f"{field}: not text (a lone surrogate)", field=field) from None
    return value


def check_address(field: str, item: AddressInput) -> None:
    check_text(f"{field}.address", item.address, MAX_ADDRESS)
    check_text(f"{field}.name", item.name or "", MAX_NAME)


async def message_in(info: Info, gid: str, account_id: int, field: str) -> Row[Any]:
    """A message the token grants (NOT_FOUND otherwise), of the account that writes (BAD_USER_INPUT otherwise):
    its id, subject, ids for reply headers, and blob."""
    pk = pk_of(gid, "Message")
    rows = await info.context.db.rows(
        select(
            Message.id,
            Message.account_id,
            Message.subject,
            Message.message_id_header,
            Message.references,
            Message.blob_sha256,
        ).where(Message.id == pk, Message.account_id.in_(sorted(info.context.account_ids))),
        shard=shard_of(pk),
    )
    if not rows:
        raise not_found("Message")
    if rows[0].account_id != account_id:
        raise BadUserInput(f"{field}: the message belongs to another account than the one writing", field=field)
    return rows[0]


async def uploads_of(info: Info, gids: Sequence[str], account_id: int, field: str = "attachments") -> list[int]:
    """Upload ids of the account (NOT_FOUND for another's, as for a missing one), within the count and the
    total size a message may carry."""
    if len(gids) > MAX_ATTACHMENTS:
        raise BadUserInput(f"{field}: at most {MAX_ATTACHMENTS}", field=field)
    pks = [upload_pk(gid) for gid in gids]
    if not pks:
        return []
    rows = await info.context.db.rows(
        select(Upload.id, Upload.size).where(Upload.id.in_(pks), Upload.account_id == account_id),
        shard=shard_of(account_id),
    )
    sizes = {r.id: int(r.size) for r in rows}
    if any(pk not in sizes for pk in pks):
        raise not_found("Upload")
    limit = info.context.services.config.max_upload_bytes
    if sum(sizes[pk] for pk in pks) > limit:
        raise BadUserInput(f"{field}: at most {limit} bytes together", field=field)
    return pks


async def attachments_of(uow: UnitOfWork, upload_ids: Sequence[int]) -> list[Attachment]:
    """The uploads' files, in order, read in the unit of work that uses them."""
    files = await uploads.read(uow.session, uow.account_id, upload_ids)
    if len(files) != len(set(upload_ids)):
        raise not_found("Upload")  # pruned since the plan
    return [Attachment(files[pk].filename, files[pk].content_type, files[pk].data) for pk in upload_ids]
