"""What write-back does differently on Gmail accounts (schema.gmail): a message is stored once, in All Mail.

```
a sent message   Gmail's SMTP files it itself (All Mail, \\Sent): never APPENDed; found by its Message-ID
a draft          APPENDed to [Gmail]/Drafts (a label folder: All Mail gains it, labelled \\Draft), found in All
                 Mail by its X-GM-MSGID; older versions deleted for good: moved to Trash, expunged there
```
Either way the mirror's place for it becomes its real place in All Mail (schema.gmail.take_home).
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple

from schema.gmail import Stored, labels_text
from schema.models import Folder
from synccore.identity import IdentityMode, identity_of
from synccore.imap import FetchItem, ImapClient, astring
from synccore.planning import flags_text

# How long a look for the copy Gmail's SMTP filed waits for it to appear: Gmail files during the SMTP
# transaction, so the first look finds it unless something is wrong.
LOOKS = (0.0, 0.3, 1.0, 2.0)
_ITEMS = "(UID FLAGS X-GM-MSGID X-GM-LABELS MODSEQ)"


class Filed(NamedTuple):
    """A message Gmail filed: where it keeps it, the identity it gave it, its bytes as Gmail keeps them."""

    home: Stored
    identity: str
    raw: bytes


def _stored(folder: Folder, uidvalidity: int | None, item: FetchItem) -> Stored:
    if uidvalidity is None or item.uid is None:
        raise LookupError(f"{folder.name}: no UIDVALIDITY or UID to keep the message under")
    return Stored(
        folder.id, uidvalidity, item.uid, flags_text(item.flags or ()), labels_text(item.gm_labels or ()), item.modseq
    )


async def _fetch(client: ImapClient, uids: list[int], extra: str = "") -> list[FetchItem]:
    items = _ITEMS if client.has("CONDSTORE") else _ITEMS.replace(" MODSEQ", "")
    if extra:
        items = f"{items[:-1]} {extra})"
    fetched = await client.uid_fetch(uids, items)
    return sorted((i for i in fetched.items if i.uid in uids), key=lambda i: i.uid or 0)


async def filed_by_gmail(client: ImapClient, all_mail: Folder, message_id_header: str) -> Filed | None:
    """The copy Gmail's SMTP filed of a message we sent (the newest carrying its Message-ID); None when it has
    not appeared after a few looks. Raises LookupError when the server gives no UIDVALIDITY."""
    for delay in LOOKS:
        await asyncio.sleep(delay)
        selected = await client.select(all_mail.name)
        uids = await client.uid_search([b"HEADER", b"Message-ID", astring(message_id_header)])
        if uids:
            item = next(iter(await _fetch(client, uids[-1:], "BODY.PEEK[]")), None)
            identity = identity_of(IdentityMode.GMAIL, item) if item is not None else None
            if item is not None and identity is not None and item.body is not None:
                return Filed(_stored(all_mail, selected.uidvalidity, item), identity, item.body)
    return None


async def appended(
    client: ImapClient, folder: Folder, uid: int, all_mail: Folder, trash: Folder, message_id_header: str | None
) -> tuple[Stored, str]:
    """A message just APPENDed to a label folder (at `uid` there), as All Mail keeps it, with its identity.
    Every other message of All Mail that carries the same Message-ID (an older version of a draft) is deleted
    for good: Gmail would only take a label off one expunged in a label folder, and trash one expunged in All
    Mail."""
    await client.select(folder.name)
    item = next(iter(await _fetch(client, [uid])), None)
    if item is None or item.gm_msgid is None:
        raise LookupError(f"{folder.name}: UID {uid} is not there")
    msgid = item.gm_msgid
    await client.select(all_mail.name)
    found = await client.uid_search([b"X-GM-MSGID", str(msgid).encode()])
    if not found:
        raise LookupError(f"All Mail holds no X-GM-MSGID {msgid}")
    home = found[0]
    if message_id_header:
        copies = await client.uid_search([b"HEADER", b"Message-ID", astring(message_id_header)])
        older = [u for u in copies if u != home]
        if older:
            await delete_for_good(client, older, trash)
    selected = await client.select(all_mail.name)
    item = next(iter(await _fetch(client, [home])), None)
    identity = identity_of(IdentityMode.GMAIL, item) if item is not None else None
    if item is None or identity is None:
        raise LookupError(f"All Mail: UID {home} went away")
    return _stored(all_mail, selected.uidvalidity, item), identity


async def delete_for_good(client: ImapClient, all_mail_uids: list[int], trash: Folder) -> None:
    """Delete messages of the selected All Mail for good: moved to Trash, then expunged there."""
    moved = await client.uid_move(all_mail_uids, trash.name)
    if moved is None:
        return
    await client.select(trash.name)
    in_trash = sorted(moved.mapping().values())
    await client.uid_store(in_trash, "add", ["\\Deleted"])
    await client.uid_expunge(in_trash)
