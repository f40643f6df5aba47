"""The Gmail-dialect test server against Gmail's documented IMAP behaviour, through stdlib imaplib (a plain
client of the wire protocol) in this thread while the server runs on a loop of its own."""

from __future__ import annotations

import imaplib
import re
from collections.abc import Iterator

import pytest

from tests.gmailserver import GmailServer, running
from tests.gmailstore import ALL, TRASH, GmailStore


def _raw(n: int, *, reply_to: int | None = None) -> bytes:
    extra = f"In-Reply-To: <m{reply_to}@test>\r\n" if reply_to is not None else ""
    return (
        f"From: a@test\r\nTo: me@gmail.test\r\nSubject: message {n}\r\nMessage-ID: <m{n}@test>\r\n{extra}"
        f"Date: Sun, 06 Dec 2026 10:00:00 +0000\r\n\r\nbody {n}\r\n"
    ).encode()


@pytest.fixture
def store() -> GmailStore:
    s = GmailStore()
    s.add(_raw(1), labels={"\\Inbox", "Work"})
    s.add(_raw(2), labels={"Work", "Travel"}, flags={"\\Seen"})
    s.add(_raw(3, reply_to=1), labels={"\\Inbox", "\\Sent"})
    return s


@pytest.fixture
def imap(store: GmailStore) -> Iterator[imaplib.IMAP4]:
    with running(GmailServer(store)) as server:
        client = imaplib.IMAP4("127.0.0.1", server.port)
        client.login("me@gmail.test", "secret")
        yield client
        client.logout()


def _fetch(imap: imaplib.IMAP4, uids: str, items: str) -> list[bytes]:
    typ, data = imap.uid("FETCH", uids, items)
    assert typ == "OK", data
    return [d if isinstance(d, bytes) else d[0] + d[1] for d in data if d is not None and d != b")"]


def test_capabilities_and_special_use_list(imap: imaplib.IMAP4) -> None:
    assert "X-GM-EXT-1" in imap.capabilities
    assert "CONDSTORE" in imap.capabilities
    assert "MOVE" in imap.capabilities
    _typ, lines = imap.list()
    listed = b"\n".join(x for x in lines if isinstance(x, bytes))
    for attr, name in [
        (b"\\All", b"[Gmail]/All Mail"),
        (b"\\Sent", b"[Gmail]/Sent Mail"),
        (b"\\Drafts", b"[Gmail]/Drafts"),
        (b"\\Trash", b"[Gmail]/Trash"),
        (b"\\Junk", b"[Gmail]/Spam"),
        (b"\\Flagged", b"[Gmail]/Starred"),
        (b"\\Important", b"[Gmail]/Important"),
    ]:
        assert re.search(rb"\(\\HasNoChildren " + re.escape(attr) + rb'\) "/" "' + re.escape(name), listed), attr
    assert b'"Work"' in listed or b" Work" in listed


def test_label_folders_are_views_of_all_mail(imap: imaplib.IMAP4) -> None:
    imap.select('"[Gmail]/All Mail"')
    all_mail = _fetch(imap, "1:*", "(X-GM-MSGID X-GM-THRID X-GM-LABELS)")
    assert len(all_mail) == 3
    ids = [int(re.search(rb"X-GM-MSGID (\d+)", line).group(1)) for line in all_mail]  # type: ignore[union-attr]
    threads = [int(re.search(rb"X-GM-THRID (\d+)", line).group(1)) for line in all_mail]  # type: ignore[union-attr]
    assert threads[2] == threads[0] == ids[0]  # a reply joins its parent's thread
    assert b"X-GM-LABELS (Work \\Inbox)" in all_mail[0] or b"X-GM-LABELS (\\Inbox Work)" in all_mail[0]
    _typ, data = imap.select("Work")
    assert data == [b"2"]
    work = _fetch(imap, "1:*", "(X-GM-MSGID)")
    assert sorted(int(re.search(rb"X-GM-MSGID (\d+)", w).group(1)) for w in work) == ids[:2]  # type: ignore[union-attr]


def test_copy_to_a_label_folder_adds_the_label(imap: imaplib.IMAP4, store: GmailStore) -> None:
    imap.select("INBOX")
    typ, _data = imap.uid("COPY", "1", "Travel")
    assert typ == "OK"
    first = min(store.mails.values(), key=lambda m: m.msgid)
    assert first.labels == {"\\Inbox", "Work", "Travel"}
    assert len(store.boxes[ALL].uids) == 3  # still one message


def test_expunge_in_a_label_folder_removes_only_that_label(imap: imaplib.IMAP4, store: GmailStore) -> None:
    imap.select("Work")
    imap.uid("STORE", "1", "+FLAGS", "(\\Deleted)")
    imap.expunge()
    first = min(store.mails.values(), key=lambda m: m.msgid)
    assert first.labels == {"\\Inbox"}
    assert first.place == ALL


def test_moving_out_of_inbox_archives(imap: imaplib.IMAP4, store: GmailStore) -> None:
    imap.select("INBOX")
    typ, _data = imap.uid("MOVE", "1", "Travel")
    assert typ == "OK"
    first = min(store.mails.values(), key=lambda m: m.msgid)
    assert first.labels == {"Work", "Travel"}
    assert first.msgid not in store.boxes["INBOX"].uids
    assert first.msgid in store.boxes[ALL].uids


def test_trash_and_spam_are_apart_from_all_mail(imap: imaplib.IMAP4, store: GmailStore) -> None:
    imap.select("INBOX")
    typ, _ = imap.uid("MOVE", "1", '"[Gmail]/Trash"')
    assert typ == "OK"
    assert len(store.boxes[ALL].uids) == 2
    assert len(store.boxes[TRASH].uids) == 1
    typ, _data = imap.select('"[Gmail]/Trash"')
    imap.uid("STORE", "1", "+FLAGS", "(\\Deleted)")
    imap.expunge()
    assert len(store.mails) == 2  # expunged from Trash: gone for good


def test_store_labels_changes_modseq_and_reports_labels(imap: imaplib.IMAP4) -> None:
    typ, data = imap.select('"[Gmail]/All Mail" (CONDSTORE)')
    before = _fetch(imap, "1:*", "(MODSEQ)")
    modseq = max(int(re.search(rb"MODSEQ \((\d+)\)", b).group(1)) for b in before)  # type: ignore[union-attr]
    typ, data = imap.uid("STORE", "2", "+X-GM-LABELS", "(\\Inbox Receipts)")
    assert data[0] is not None
    assert typ == "OK"
    assert b"Receipts" in data[0]
    assert b"\\Inbox" in data[0]
    changed = _fetch(imap, "1:*", f"(X-GM-LABELS) (CHANGEDSINCE {modseq})")
    assert len(changed) == 1
    assert b"UID 2" in changed[0]
    imap.uid("STORE", "2", "-X-GM-LABELS", "(Receipts)")
    typ, data = imap.uid("STORE", "2", "X-GM-LABELS", "(\\Starred)")
    assert data[0] is not None
    assert b"X-GM-LABELS (\\Starred)" in data[0]
    flags = _fetch(imap, "2", "(FLAGS)")[0]
    assert b"\\Flagged" in flags  # \Starred is the \Flagged flag


def test_search_by_gmail_ids(imap: imaplib.IMAP4, store: GmailStore) -> None:
    imap.select('"[Gmail]/All Mail"')
    third = max(store.mails.values(), key=lambda m: m.msgid)
    _typ, data = imap.uid("SEARCH", "X-GM-MSGID", str(third.msgid))
    assert data == [b"3"]
    _typ, data = imap.uid("SEARCH", "X-GM-THRID", str(third.thrid))
    assert data == [b"1 3"]


def test_append_to_a_label_folder_labels_the_message(imap: imaplib.IMAP4, store: GmailStore) -> None:
    typ, data = imap.append("Work", "(\\Seen)", None, _raw(9))
    assert typ == "OK", data
    assert b"APPENDUID" in data[0], data
    newest = max(store.mails.values(), key=lambda m: m.msgid)
    assert newest.labels == {"Work"}
    assert newest.flags == {"\\Seen"}


def test_without_the_dialect_gmail_items_are_refused(store: GmailStore) -> None:
    with running(GmailServer(store, gmail=False)) as server:
        client = imaplib.IMAP4("127.0.0.1", server.port)
        client.login("me@gmail.test", "secret")
        assert "X-GM-EXT-1" not in client.capabilities
        client.select("Work")
        with pytest.raises(imaplib.IMAP4.error):
            client.uid("FETCH", "1:*", "(X-GM-LABELS)")
        client.logout()


def test_wrong_password_is_refused(store: GmailStore) -> None:
    with running(GmailServer(store)) as server:
        client = imaplib.IMAP4("127.0.0.1", server.port)
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            client.login("me@gmail.test", "wrong")
        client.shutdown()
