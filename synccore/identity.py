"""A message's identity, which survives moves: the server's own id where it has one, else the content.

RFC 8474 OBJECTID's EMAILID, Gmail's X-GM-MSGID and Dovecot's X-GUID each stay the same when a message is
moved or copied. Elsewhere the SHA-256 of the raw message (which holds its Message-ID) stands in: a moved
message keeps its bytes, so it keeps its identity too.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum

from synccore.imap import CommandFailed, FetchItem, ImapClient


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
    if client.has("OBJECTID"):
        return IdentityMode.OBJECTID
    if client.has("X-GM-EXT-1"):
        return IdentityMode.GMAIL
    # Dovecot does not advertise X-GUID: ask for it on a UID that cannot exist. A server that knows the
    # item answers OK with no data; one that does not answers BAD.
    await client.select("INBOX", readonly=True)
    try:
        await client.uid_fetch("4294967295", "(UID X-GUID)")
    except CommandFailed:
        return IdentityMode.HASH
    return IdentityMode.XGUID


def metadata_items(client: ImapClient, mode: IdentityMode) -> str:
    modseq = " MODSEQ" if client.has("CONDSTORE") else ""
    return f"(UID FLAGS INTERNALDATE RFC822.SIZE{modseq}{_ITEM[mode]})"


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


async def identity_at(client: ImapClient, folder: str, uid: int, raw: bytes) -> str:
    """The identity of the message at UID in a folder (one we just APPENDed as `raw`): the server's own id
    where it gives one, else the content's. Leaves the folder selected."""
    mode = await detect(client)
    await client.select(folder)
    fetched = await client.uid_fetch([uid], metadata_items(client, mode))
    found = next((identity_of(mode, i) for i in fetched.items if i.uid == uid), None)
    return found or content_identity(hashlib.sha256(raw).digest())
