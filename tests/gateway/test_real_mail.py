"""Real mail end to end: the parser corpus (CPython's and notmuch's test mail, see tests/corpus.py), written
through the schema write API as the sync core writes it, then read back through HTTP. Every message's decoded
subject, addresses, folders and attachment names must match what Python's email package decodes from the raw
bytes, and a malformed message is still listed and flagged."""

from __future__ import annotations

import email
import email.policy
import email.utils
import hashlib
import importlib.util
import re
import sys
from collections import defaultdict
from collections.abc import Sequence
from email.header import decode_header, make_header
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from gateway.ids import to_global
from gateway.testing import Client, add_folder, deliver
from schema import accounts, tokens
from schema.crypto import CredentialBox
from schema.unit import Store

FOLDERS = ("INBOX", "Lists")


def corpus() -> list[tuple[str, bytes]]:
    """tests/corpus.py's messages (fetched into a cache at test time), loaded by path: tests/ is no package."""
    spec = importlib.util.spec_from_file_location("inboxql_test_corpus", Path(__file__).parents[1] / "corpus.py")
    assert spec is not None
    assert spec.loader is not None
    module = sys.modules.get(spec.name) or importlib.util.module_from_spec(spec)
    if spec.name not in sys.modules:
        sys.modules[spec.name] = module  # its dataclasses look themselves up there
        spec.loader.exec_module(module)
    return cast(list[tuple[str, bytes]], module.corpus_messages())


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


def spread(messages: Sequence[tuple[str, bytes]]) -> dict[str, tuple[bytes, set[str]]]:
    """identity -> (raw, folders): even messages in INBOX, odd in Lists, every seventh in both."""
    placed: dict[str, tuple[bytes, set[str]]] = {}
    for i, (_, raw) in enumerate(messages):
        identity = "hash:" + hashlib.sha256(raw).hexdigest()[:40]
        folders = {FOLDERS[i % 2]} | ({FOLDERS[(i + 1) % 2]} if i % 7 == 0 else set())
        placed.setdefault(identity, (raw, set()))[1].update(folders)
    return placed


@pytest.mark.slow
async def test_real_mail_reads_back_as_the_email_package_decodes_it(
    http: httpx.AsyncClient, gw_store: Store, credential_box: CredentialBox
) -> None:
    messages = corpus()
    assert len(messages) > 300
    endpoint = accounts.ImapEndpoint("127.0.0.1", 143, "none", "corpus")
    account = await accounts.create(gw_store, credential_box, "corpus@example.test", endpoint, "pw")
    folder_ids = {name: await add_folder(gw_store, account, name, None) for name in FOLDERS}
    for name in FOLDERS:
        items = [(raw, ()) for raw, folders in spread(messages).values() if name in folders]
        for start in range(0, len(items), 100):
            await deliver(gw_store, account, folder_ids[name], items[start : start + 100], first_uid=start + 1)
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
    expected = spread(messages)
    assert len(read) == page["totalCount"] == len(expected)

    by_raw = {raw: folders for raw, folders in expected.values()}
    compared: dict[str, int] = defaultdict(int)
    mismatches: list[tuple[str, str, object, object]] = []
    for message in read:
        raw = (await http.get(message["rawUrl"])).content
        assert raw in by_raw, message["subject"]
        assert {f["name"] for f in message["folders"]} == by_raw[raw]
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
