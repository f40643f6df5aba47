"""`inboxql verify`: compare the mirror with the live server and list every difference.

Compared: the folder names, each folder's UIDVALIDITY, its UIDs, each message's flags and keywords, the
SHA-256 of each raw message against the stored blob (read back and re-hashed), each message's labels
against its keywords, and messages left in no folder.

Gmail accounts (X-GM-EXT-1) are compared in Gmail's model, as they are mirrored (schema.gmail): All Mail, Trash
and Spam as above, each place's X-GM-LABELS too; each label folder by the X-GM-MSGIDs it holds against the
messages the mirror shows in it (its derived places: their UIDs are All Mail's, not the folder's); each message's
labels against its keywords and X-GM-LABELS.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

from sqlalchemy import select

from schema import accounts, blobs, gmail, skipped
from schema.aggregates import keywords_of
from schema.crypto import CredentialBox, Purpose
from schema.models import Account, Folder, Label, Message, MessageLabel, MessagePlace
from schema.unit import Store
from synccore.connection import Endpoint, open_client
from synccore.imap import FetchItem, ImapClient
from synccore.planning import flags_text
from synccore.tokens import TokenKeeper

CHUNK = 500


async def verify(store: Store, box: CredentialBox, account_id: int) -> list[str]:
    async with store.sessions() as s:
        account = await s.get(Account, account_id)
    if account is None:
        raise LookupError(f"account {account_id} does not exist")
    token = await TokenKeeper(store, box).access_token(account_id) if account.oauth2_provider is not None else None
    password = box.open(account.imap_password, Purpose.ACCOUNT) if account.imap_password is not None else ""
    endpoint = Endpoint.of(account, password, token)
    client = await open_client(endpoint, allow_insecure=True)
    gmail_model = await accounts.identity_mode(store, account_id) == "gmail" and client.has("X-GM-EXT-1")
    try:
        return await _compare(store, client, account_id, gmail_model)
    finally:
        await client.logout()


async def _compare(store: Store, client: ImapClient, account_id: int, gmail_model: bool = False) -> list[str]:
    diffs: list[str] = []
    listing = {
        m.name
        for m in await client.list_folders()
        if not {f.lower() for f in m.flags} & {"\\noselect", "\\nonexistent"}
    }
    async with store.sessions() as s:
        mirrored = {f.name: f for f in await s.scalars(select(Folder).where(Folder.account_id == account_id))}
    for name in sorted(listing - mirrored.keys()):
        diffs.append(f"folder {name!r}: on the server, not in the mirror")
    for name in sorted(mirrored.keys() - listing):
        diffs.append(f"folder {name!r}: in the mirror, not on the server")
    stored = gmail_model and any(f.role == "all" for f in mirrored.values())
    for name in sorted(listing & mirrored.keys()):
        if stored and mirrored[name].role not in gmail.STORED_ROLES:
            diffs += await _compare_view(store, client, mirrored[name])
        else:
            diffs += await _compare_folder(store, client, mirrored[name], gmail_model)
    diffs += await _compare_messages(store, account_id)
    return diffs


def _place_key(item: FetchItem, gmail_model: bool) -> str:
    labels = gmail.labels_text(item.gm_labels or ()) if gmail_model else ""
    return gmail.place_key(flags_text(item.flags or ()), labels)


async def _compare_folder(store: Store, client: ImapClient, folder: Folder, gmail_model: bool = False) -> list[str]:
    where = f"folder {folder.name!r}"
    sel = await client.select(folder.name, readonly=True)
    if sel.uidvalidity != folder.uidvalidity:
        return [f"{where}: UIDVALIDITY {sel.uidvalidity} on the server, {folder.uidvalidity} in the mirror"]
    items = "(UID FLAGS X-GM-LABELS)" if gmail_model else "(UID FLAGS)"
    listing = await client.uid_fetch("1:*", items) if sel.exists else None
    remote_flags = {i.uid: _place_key(i, gmail_model) for i in (listing.items if listing else []) if i.uid is not None}
    async with store.sessions() as s:
        rows = await s.execute(
            select(MessagePlace.uid, MessagePlace.flags, MessagePlace.labels, Message.blob_sha256)
            .join(Message, Message.id == MessagePlace.message_id)
            .where(MessagePlace.folder_id == folder.id)
        )
        local = {uid: (gmail.place_key(flags, labels), sha) for uid, flags, labels, sha in rows}
        left_out = await skipped.of_folder(s, folder.id, folder.uidvalidity) if folder.uidvalidity else {}
    diffs = [
        f"{where}: UID {uid} on the server, not in the mirror"
        + (f" (skipped: {left_out[uid].reason})" if uid in left_out else "")
        for uid in sorted(remote_flags.keys() - local)
    ]
    diffs += [f"{where}: UID {uid} in the mirror, not on the server" for uid in sorted(local.keys() - remote_flags)]
    common = sorted(remote_flags.keys() & local.keys())
    what = "flags and labels" if gmail_model else "flags"
    for uid in common:
        if remote_flags[uid] != local[uid][0]:
            diffs.append(
                f"{where}: UID {uid} {what} {remote_flags[uid]!r} on the server, {local[uid][0]!r} in the mirror"
            )
    for start in range(0, len(common), CHUNK):
        uids = common[start : start + CHUNK]
        bodies = await client.uid_fetch(uids, "(UID BODY.PEEK[])")
        async with store.sessions() as s:
            for item in bodies.items:
                if item.uid is None or item.body is None:
                    continue
                sha = local[item.uid][1]
                if hashlib.sha256(item.body).digest() != sha:
                    diffs.append(f"{where}: UID {item.uid} raw message differs from the mirror's")
                    continue
                try:
                    stored = await blobs.get(s, sha)
                except blobs.BlobCorrupt:
                    stored = None
                if stored is None:
                    diffs.append(f"{where}: UID {item.uid} raw message missing or corrupt in the store")
    return diffs


async def _compare_view(store: Store, client: ImapClient, folder: Folder) -> list[str]:
    """A Gmail label folder: the messages it holds (by X-GM-MSGID) against those the mirror shows in it."""
    where = f"folder {folder.name!r}"
    sel = await client.select(folder.name, readonly=True)
    listing = await client.uid_fetch("1:*", "(UID X-GM-MSGID)") if sel.exists else None
    remote = {f"gm:{i.gm_msgid}" for i in (listing.items if listing else []) if i.gm_msgid is not None}
    async with store.sessions() as s:
        rows = await s.execute(
            select(Message.identity, MessagePlace.uidvalidity)
            .join(MessagePlace, MessagePlace.message_id == Message.id)
            .where(MessagePlace.folder_id == folder.id)
        )
        local: dict[str, int] = {identity: validity for identity, validity in rows}
    diffs = [f"{where}: message {i} on the server, not in the mirror" for i in sorted(remote - local.keys())]
    diffs += [f"{where}: message {i} in the mirror, not on the server" for i in sorted(local.keys() - remote)]
    diffs += [
        f"{where}: message {i} held as a copy (UIDVALIDITY {v}), not as a label"
        for i, v in sorted(local.items())
        if v != gmail.VIEW_UIDVALIDITY
    ]
    return diffs


async def _compare_messages(store: Store, account_id: int) -> list[str]:
    diffs: list[str] = []
    async with store.sessions() as s:
        keywords: dict[int, set[str]] = defaultdict(set)
        placed: set[int] = set()
        for mid, flags, gm_labels in await s.execute(
            select(MessagePlace.message_id, MessagePlace.flags, MessagePlace.labels).where(
                MessagePlace.account_id == account_id
            )
        ):
            placed.add(mid)
            keywords[mid] |= keywords_of(flags.split())
            keywords[mid] |= set(gm_labels.split("\n")) if gm_labels else set()
        labels: dict[int, set[str]] = defaultdict(set)
        for mid, name in await s.execute(
            select(MessageLabel.message_id, Label.name)
            .join(Label, Label.id == MessageLabel.label_id)
            .where(Label.account_id == account_id)
        ):
            labels[mid].add(name)
        for (mid,) in await s.execute(select(Message.id).where(Message.account_id == account_id)):
            if mid not in placed:
                diffs.append(f"message {mid}: in no folder")
            elif labels.get(mid, set()) != keywords.get(mid, set()):
                diffs.append(
                    f"message {mid}: labels {sorted(labels.get(mid, set()))} but keywords {sorted(keywords[mid])}"
                )
    return diffs
