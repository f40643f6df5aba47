"""The delta feed: an account's changes after a cursor, as the `changes` query returns them.

A change cursor (gateway.ids) is opaque to clients and names its account. A cursor older than what the log
keeps is CURSOR_EXPIRED: the client re-reads what it caches and starts again from `changesCursor`.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.errors import BadUserInput, CursorExpired
from gateway.graphql.context import Info
from gateway.graphql.pages import DEFAULT_CHANGES, MAX_CHANGES
from gateway.graphql.types.changes import Change, ChangePage
from gateway.ids import decode_change_cursor, encode_change_cursor
from schema import changelog
from schema.changelog import ObjectType
from schema.shards import shard_of


def expired() -> CursorExpired:
    return CursorExpired("the change cursor is older than the change log keeps: re-read and start from changesCursor")


async def read_page(
    info: Info, account_id: int, after: str | None, first: int | None, types: Sequence[ObjectType] | None
) -> ChangePage:
    limit = DEFAULT_CHANGES if first is None else first
    if not 0 < limit <= MAX_CHANGES:
        raise BadUserInput(f"first must be between 1 and {MAX_CHANGES}")
    seq = decode_change_cursor(after, account_id) if after is not None else 0
    async with info.context.db.session(shard_of(account_id)) as session:
        newest = await changelog.newest_seq(session, account_id)
        entries = await changelog.read(session, account_id, seq, limit + 1, types or None)
        # Checked after the read: an expiry racing with it makes the check fail, never the page silently short.
        if after is not None and not await changelog.cursor_valid(session, account_id, seq):
            raise expired()
    more = len(entries) > limit
    entries = entries[:limit]
    loaders = info.context.loaders
    changes = [Change.of(account_id, e, loaders) for e in entries]
    # Without more, everything up to `newest` was scanned, also the entries a `types` filter left out.
    last = changes[-1].seq if more else max([seq, newest, *(c.seq for c in changes)])
    return ChangePage(changes=changes, cursor=encode_change_cursor(account_id, last), has_more=more)


async def current_cursor(info: Info, account_id: int) -> str:
    async with info.context.db.session(shard_of(account_id)) as session:
        return encode_change_cursor(account_id, await changelog.newest_seq(session, account_id))
