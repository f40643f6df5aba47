"""A message's identity, which survives moves: the server's own id where it has one, else the content.

RFC 8474 OBJECTID's EMAILID, Gmail's X-GM-MSGID and Dovecot's X-GUID each stay the same when a message is
moved or copied. Elsewhere the SHA-256 of the raw message (which holds its Message-ID) stands in: a moved
message keeps its bytes, so it keeps its identity too.

An account keeps the mode its first sync chose (`account_mode`): a server upgraded to offer OBJECTID later would
otherwise give every message a new identity, and the mirror would delete and re-create them all. Only when the
server stops giving the ids the account's messages are known by are they re-keyed, by their content.
"""

from __future__ import annotations

import hashlib
import logging
from enum import StrEnum

from schema import accounts, messages
from schema.retry import retry_deadlocks
from schema.unit import Store
from synccore.imap import CommandFailed, FetchItem, ImapClient

log = logging.getLogger(__name__)


class IdentityMode(StrEnum):
    OBJECTID = "objectid"
    GMAIL = "gmail"
    XGUID = "xguid"
    HASH = "hash"


_ITEM = {
    IdentityMode.OBJECTID: " EMAILID",
    IdentityMode.GMAIL: " X-GM-MSGID X-GM-THRID X-GM-LABELS",
    IdentityMode.XGUID: " X-GUID",
    IdentityMode.HASH: "",
}


async def detect(client: ImapClient) -> IdentityMode:
    """The best identity the server offers."""
    if client.has("OBJECTID"):
        return IdentityMode.OBJECTID
    if client.has("X-GM-EXT-1"):
        return IdentityMode.GMAIL
    return IdentityMode.XGUID if await _answers_x_guid(client) else IdentityMode.HASH


async def offers(client: ImapClient, mode: IdentityMode) -> bool:
    """Whether the server still gives the ids of this mode."""
    if mode is IdentityMode.OBJECTID:
        return client.has("OBJECTID")
    if mode is IdentityMode.GMAIL:
        return client.has("X-GM-EXT-1")
    if mode is IdentityMode.XGUID:
        return await _answers_x_guid(client)
    return True


async def _answers_x_guid(client: ImapClient) -> bool:
    # Dovecot does not advertise X-GUID: ask for it on a UID that cannot exist. A server that knows the
    # item answers OK with no data; one that does not answers BAD.
    await client.select("INBOX", readonly=True)
    try:
        await client.uid_fetch("4294967295", "(UID X-GUID)")
    except CommandFailed:
        return False
    return True


async def account_mode(store: Store, account_id: int, client: ImapClient) -> IdentityMode:
    """The identity mode of an account: the one its first sync found, kept whatever the server offers since."""
    stored = await accounts.identity_mode(store, account_id)
    if stored is None:
        # Mirrored before the mode was recorded: the messages say which one it was.
        async with store.sessions() as s:
            sample = await messages.identity_sample(s, account_id)
        found = _PREFIXES.get(sample.split(":", 1)[0]) if sample else None
        if found is None:
            found = await detect(client)
        return IdentityMode(await accounts.settle_identity_mode(store, account_id, found.value))
    mode = IdentityMode(stored)
    if await offers(client, mode):
        return mode
    # The server no longer gives the ids the messages are known by (moved to another server, a plugin removed):
    # their content is what both sides still share.
    log.warning("account %s: the server no longer offers %s ids; known by content from now on", account_id, mode)

    async def step() -> None:
        async with store.unit(account_id) as uow:
            await messages.rekey_by_content(uow)
            await accounts.replace_identity_mode(uow, IdentityMode.HASH.value)

    await retry_deadlocks(step)
    return IdentityMode.HASH


def metadata_items(client: ImapClient, mode: IdentityMode) -> str:
    modseq = " MODSEQ" if client.has("CONDSTORE") else ""
    return f"(UID FLAGS INTERNALDATE RFC822.SIZE{modseq}{_ITEM[mode]})"


# The prefix of an identity (identity_of, content_identity) and the mode that made it.
_PREFIXES = {
    "oid": IdentityMode.OBJECTID,
    "gm": IdentityMode.GMAIL,
    "guid": IdentityMode.XGUID,
    "sha": IdentityMode.HASH,
}


def identity_of(mode: IdentityMode, item: FetchItem) -> str | None:
    if mode is IdentityMode.OBJECTID and item.email_id:
        return f"oid:{item.email_id}"
    if mode is IdentityMode.GMAIL and item.gm_msgid is not None:
        return f"gm:{item.gm_msgid}"
    if mode is IdentityMode.XGUID and item.x_guid:
        return f"guid:{item.x_guid}"
    return None


def content_identity(digest: bytes) -> str:
    """The identity of a message by its content: the SHA-256 of the raw bytes (which hold its Message-ID)."""
    return "sha:" + digest.hex()


async def identity_at(store: Store, account_id: int, client: ImapClient, folder: str, uid: int, raw: bytes) -> str:
    """The identity of the message at UID in a folder (one we just APPENDed as `raw`): the server's own id
    where the account uses one, else the content's. Leaves the folder selected."""
    mode = await account_mode(store, account_id, client)
    await client.select(folder)
    fetched = await client.uid_fetch([uid], metadata_items(client, mode))
    found = next((identity_of(mode, i) for i in fetched.items if i.uid == uid), None)
    return found or content_identity(hashlib.sha256(raw).digest())
