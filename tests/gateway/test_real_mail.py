"""Real mail end to end: the parser corpus (CPython's and notmuch's test mail, see tests/corpus.py) on a real
Dovecot, mirrored by the sync core, then read back through HTTP. Every message's decoded
subject, addresses, folders and attachment names must match what Python's email package decodes from the raw
bytes, and a malformed message is still listed and flagged."""

from __future__ import annotations

import email
import email.policy
import email.utils
import re
from collections import defaultdict
from collections.abc import Sequence
from email.header import decode_header, make_header
from email.message import EmailMessage
from typing import Any

import httpx
import pytest

from gateway.ids import to_global
from gateway.testing import Client
from inboxql.devmail import DovecotServer
from schema import accounts, tokens
from schema.crypto import CredentialBox
from schema.unit import Store
from synccore.account import AccountSync
from tests.conftest import new_user
from tests.corpus import corpus_messages
from tests.sync.support import connect

FOLDERS = ("INBOX", "Lists")


def _collapse(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


class Expected:
    """What Python's email package (policy.default) decodes from the raw bytes; None where it gives up."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.message: EmailMessage = email.message_from_bytes(raw, policy=email.policy.default)

    def subject(self) -> str | None:
        try:
            value = self.message["subject"]
        except Exception:
            return None
        return _collapse(str(value)) if value is not None else ""

    def addresses(self, name: str) -> list[tuple[str, str]] | None:
        try:
            headers = self.message.get_all(name) or []
            found = [(a.display_name, a.addr_spec) for h in headers for a in h.addresses]
        except Exception:
            return None
        if any(h.defects for h in self.message.get_all(name) or []):
            return None  # a header the stdlib itself reports broken: its reading is a guess, as is ours
        return [(_collapse(n), addr) for n, addr in found]

    def legacy_addresses(self, name: str) -> list[tuple[str, str]] | None:
        """The compat32 reading (email.utils.getaddresses, encoded words decoded): it keeps display names
        written in RFC 5322's obsolete syntax ("Barry A. Warsaw" unquoted) that policy.default drops."""
        try:
            legacy = email.message_from_bytes(self.raw, policy=email.policy.compat32)
            pairs = email.utils.getaddresses([str(h) for h in legacy.get_all(name) or []])
            return [(_collapse(str(make_header(decode_header(n)))), addr) for n, addr in pairs]
        except Exception:
            return None

    def attachment_names(self) -> set[str] | None:
        try:
            return {p.get_filename() or "" for p in self.message.walk() if p.get_filename()} - {""}
        except Exception:
            return None


async def mirror_corpus(
    dovecot: DovecotServer, store: Store, box: CredentialBox, messages: Sequence[tuple[str, bytes]]
) -> tuple[int, dict[str, tuple[bytes, set[str]]]]:
    """The corpus on a real Dovecot (even messages in INBOX, odd in Lists, every seventh copied to the other
    folder, so it is one message in two), synced by the sync core. Returns the account and, by Dovecot's
    X-GUID, each message's raw bytes as the server keeps them and the folders that hold it."""
    user, password = new_user(dovecot)
    imap = await connect(dovecot, user, password)
    await imap.create(FOLDERS[1])
    for n, name in enumerate(FOLDERS):
        dovecot.append(user, password, name, [raw for i, (_, raw) in enumerate(messages) if i % 2 == n])
    for n, name in enumerate(FOLDERS):
        await imap.select(name)
        uids = await imap.uid_search("ALL")
        await imap.uid_copy(uids[::7], FOLDERS[1 - n])
    served: dict[str, tuple[bytes, set[str]]] = {}
    for name in FOLDERS:
        await imap.select(name, readonly=True)
        for item in (await imap.uid_fetch("1:*", "(UID X-GUID BODY.PEEK[])")).items:
            assert item.x_guid is not None
            assert item.body is not None
            served.setdefault(item.x_guid, (item.body, set()))[1].add(name)
    await imap.logout()
    endpoint = accounts.ImapEndpoint(dovecot.host, dovecot.port, "none", user)
    account = await accounts.create(store, box, f"{user}@example.test", endpoint, password)
    await AccountSync(store, box, account).run_once()
    return account, served


@pytest.mark.slow
async def test_real_mail_reads_back_as_the_email_package_decodes_it(
    http: httpx.AsyncClient, gw_store: Store, credential_box: CredentialBox, dovecot: DovecotServer
) -> None:
    messages = corpus_messages()
    assert len(messages) > 300
    account, served = await mirror_corpus(dovecot, gw_store, credential_box, messages)
    async with gw_store.sessions() as session, session.begin():
        client = Client(http, await tokens.create_token(session, [account]))

    read: list[dict[str, Any]] = []
    after = None
    query = """query($a: ID!, $after: String) { messages(accountId: $a, first: 100, after: $after) {
        totalCount nodes { id subject malformed rawUrl from { name address } to { name address }
        cc { name address } folders { name } attachments { filename } }
        pageInfo { hasNextPage endCursor } } }"""
    while True:
        page = (await client.data(query, {"a": to_global("Account", account), "after": after}))["messages"]
        read += page["nodes"]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert len(read) == page["totalCount"] == len(served)

    # The corpus holds a few byte-identical duplicates: each is its own message, with its own folders.
    by_raw: dict[bytes, list[set[str]]] = defaultdict(list)
    for raw, folders in served.values():
        by_raw[raw].append(folders)
    compared: dict[str, int] = defaultdict(int)
    mismatches: list[tuple[str, str, object, object]] = []
    for message in read:
        raw = (await http.get(message["rawUrl"])).content
        assert raw in by_raw, message["subject"]
        assert {f["name"] for f in message["folders"]} in by_raw[raw]
        want = Expected(raw)
        subject = want.subject()
        if subject is not None:
            compared["subject"] += 1
            if _collapse(message["subject"]) != subject:
                mismatches.append((message["id"], "subject", message["subject"], subject))
        for header, field in (("from", "from"), ("to", "to"), ("cc", "cc")):
            addresses = want.addresses(header)
            if addresses is not None:
                compared[header] += 1
                got = [(_collapse(a["name"]), a["address"]) for a in message[field]]
                if got != addresses and got != want.legacy_addresses(header):
                    mismatches.append((message["id"], header, got, addresses))
        names = want.attachment_names()
        if names is not None:
            compared["attachments"] += 1
            got_names = {a["filename"] for a in message["attachments"] if a["filename"]}
            if got_names != names:
                mismatches.append((message["id"], "attachments", sorted(got_names), sorted(names)))
    assert compared["subject"] > 300
    assert compared["from"] > 300
    assert mismatches == []
    malformed = [m for m in read if m["malformed"]]
    assert malformed, "the corpus has broken MIME: it must still be listed, and flagged"
