"""`inboxql verify`: compare the mirror with the live server and list every difference.

Compared: the folder names, each folder's UIDVALIDITY, its UIDs, each message's flags and keywords, the
SHA-256 of each raw message against the stored blob (read back and re-hashed), each message's labels
against its keywords, and messages left in no folder.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

from sqlalchemy import select

from schema import blobs, skipped
from schema.aggregates import keywords_of
from schema.crypto import CredentialBox, Purpose
from schema.models import Account, Folder, Label, Message, MessageLabel, MessagePlace
from schema.unit import Store
from synccore.connection import Endpoint, open_client
from synccore.imap import ImapClient
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
    endpoint = Endpoint(
        account.imap_host,
        account.imap_port,
        account.imap_security,
        account.imap_username,
        password,
        account.tls_ca_file,
        token,
    )
    client = await open_client(endpoint, allow_insecure=True)
    try:
        return await _compare(store, client, account_id)
    finally:
        await client.logout()


async def _compare(store: Store, client: ImapClient, account_id: int) -> list[str]:
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
    for name in sorted(listing & mirrored.keys()):
        diffs += await _compare_folder(store, client, mirrored[name])
    diffs += await _compare_messages(store, account_id)
    return diffs


async def _compare_folder(store: Store, client: ImapClient, folder: Folder) -> list[str]:
    where = f"folder {folder.name!r}"
    sel = await client.select(folder.name, readonly=True)
    if sel.uidvalidity != folder.uidvalidity:
        return [f"{where}: UIDVALIDITY {sel.uidvalidity} on the server, {folder.uidvalidity} in the mirror"]
    listing = await client.uid_fetch("1:*", "(UID FLAGS)") if sel.exists else None
    remote_flags = {i.uid: flags_text(i.flags or ()) for i in (listing.items if listing else []) if i.uid is not None}
    async with store.sessions() as s:
        rows = await s.execute(
            select(MessagePlace.uid, MessagePlace.flags, Message.blob_sha256)
            .join(Message, Message.id == MessagePlace.message_id)
            .where(MessagePlace.folder_id == folder.id)
        )
        local = {uid: (flags, sha) for uid, flags, sha in rows}
        left_out = await skipped.of_folder(s, folder.id, folder.uidvalidity) if folder.uidvalidity else {}
    diffs = [
        f"{where}: UID {uid} on the server, not in the mirror"
        + (f" (skipped: {left_out[uid].reason})" if uid in left_out else "")
        for uid in sorted(remote_flags.keys() - local)
    ]
    diffs += [f"{where}: UID {uid} in the mirror, not on the server" for uid in sorted(local.keys() - remote_flags)]
    common = sorted(remote_flags.keys() & local.keys())
    for uid in common:
        if remote_flags[uid] != local[uid][0]:
            diffs.append(
                f"{where}: UID {uid} flags {remote_flags[uid]!r} on the server, {local[uid][0]!r} in the mirror"
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


async def _compare_messages(store: Store, account_id: int) -> list[str]:
    diffs: list[str] = []
    async with store.sessions() as s:
        keywords: dict[int, set[str]] = defaultdict(set)
        placed: set[int] = set()
        for mid, flags in await s.execute(
            select(MessagePlace.message_id, MessagePlace.flags).where(MessagePlace.account_id == account_id)
        ):
            placed.add(mid)
            keywords[mid] |= keywords_of(flags.split())
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
