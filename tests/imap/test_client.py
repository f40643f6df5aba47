"""ImapClient against a real Dovecot (the shared `dovecot` and `mail_user` fixtures)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from inboxql.devmail import DovecotServer, free_port
from synccore.imap import (
    AuthenticationFailed,
    CommandFailed,
    ConnectionLost,
    Exists,
    Expunge,
    FetchItem,
    ImapClient,
    ImapTimeout,
    ProtocolError,
)

FULL = "UID FLAGS MODSEQ INTERNALDATE RFC822.SIZE X-GUID BODY.PEEK[]"


def message(n: int, extra: bytes = b"") -> bytes:
    return (
        b"From: sender@example.com\r\nTo: you@example.com\r\nSubject: message %d\r\n"
        b"Message-ID: <%d@example.com>\r\n\r\nHello number %d\r\n%s" % (n, n, n, extra)
    )


EIGHT_BIT = (
    b"From: =?utf-8?q?Ren=C3=A9?= <rene@example.com>\r\nSubject: caf\xe9 \xc3\xa9t\xc3\xa9\r\n"
    b"Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    b"Tr\xe8s bien \x80\x81\xfe\xff ) {12}\r\n* 3 EXISTS\r\n"
    + bytes(range(1, 256)).replace(b"\r", b"").replace(b"\n", b"")
    + b"\r\n"
)


def big_attachment_message() -> bytes:
    payload = os.urandom(3 * 1024 * 1024)
    encoded = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    return (
        b"From: a@example.com\r\nSubject: big\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        b"--b1\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        b"--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="blob.bin"\r\n\r\n' + encoded + b"--b1--\r\n"
    )


@contextlib.asynccontextmanager
async def logged_in(dovecot: DovecotServer, user: tuple[str, str], timeout: float = 20) -> AsyncIterator[ImapClient]:
    client = ImapClient(timeout=timeout)
    await client.connect(dovecot.host, dovecot.port, security="none", timeout=timeout)
    await client.login(*user)
    try:
        yield client
    finally:
        await client.logout()


# ---------------------------------------------------------------------------------- connecting


async def test_login_failure_raises_authentication_failed(dovecot: DovecotServer, mail_user: tuple[str, str]) -> None:
    client = ImapClient(timeout=10)
    await client.connect(dovecot.host, dovecot.port, security="none")
    with pytest.raises(AuthenticationFailed) as failed:
        await client.login(mail_user[0], "wrong password")
    assert failed.value.status == "NO"
    assert failed.value.code is not None
    assert failed.value.code.name == "AUTHENTICATIONFAILED"
    await client.close()


@pytest.mark.parametrize("password", ['with space "quote" and \\ backslash', "pässwörd ✓", "{5}"])
async def test_login_quotes_or_literals_credentials(dovecot: DovecotServer, password: str) -> None:
    user = f"q{os.urandom(5).hex()}"
    dovecot.add_user(user, password)
    async with logged_in(dovecot, (user, password)) as client:
        assert "MOVE" in client.capabilities


async def test_capabilities_are_refreshed_after_login(dovecot: DovecotServer, mail_user: tuple[str, str]) -> None:
    client = ImapClient(timeout=10)
    await client.connect(dovecot.host, dovecot.port, security="none")
    assert "CONDSTORE" not in client.capabilities  # Dovecot lists only the basics before login
    await client.login(*mail_user)
    assert {"CONDSTORE", "QRESYNC", "MOVE", "UIDPLUS", "IDLE", "ESEARCH"} <= client.capabilities
    await client.logout()


async def test_authenticate_plain(dovecot: DovecotServer, mail_user: tuple[str, str]) -> None:
    client = ImapClient(timeout=10)
    await client.connect(dovecot.host, dovecot.port, security="none")
    await client.authenticate_plain(*mail_user)
    assert "MOVE" in client.capabilities
    other = ImapClient(timeout=10)
    await other.connect(dovecot.host, dovecot.port, security="none")
    with pytest.raises(AuthenticationFailed):
        await other.authenticate_plain(mail_user[0], "nope")
    await other.close()
    await client.logout()


async def test_password_is_never_logged(
    dovecot: DovecotServer, mail_user: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="synccore.imap")
    async with logged_in(dovecot, mail_user) as client:
        await client.noop()
    assert "LOGIN" in caplog.text
    assert "NOOP" in caplog.text
    assert mail_user[1] not in caplog.text


async def test_tls_verifies_against_the_test_ca(dovecot: DovecotServer, mail_user: tuple[str, str]) -> None:
    context = ssl.create_default_context(cafile=str(dovecot.ca_file))
    client = ImapClient(timeout=10)
    await client.connect(dovecot.host, dovecot.tls_port, security="tls", ssl_context=context)
    await client.login(*mail_user)
    assert "IDLE" in client.capabilities
    await client.logout()


async def test_tls_without_the_test_ca_fails_verification(dovecot: DovecotServer) -> None:
    client = ImapClient(timeout=10)
    with pytest.raises(ConnectionLost) as lost:
        await client.connect(dovecot.host, dovecot.tls_port, security="tls")
    assert isinstance(lost.value.__cause__, ssl.SSLCertVerificationError)


async def test_starttls_verifies_and_forgets_pre_tls_capabilities(
    dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    context = ssl.create_default_context(cafile=str(dovecot.ca_file))
    client = ImapClient(timeout=10)
    await client.connect(dovecot.host, dovecot.port, security="starttls", ssl_context=context)
    # RFC 3501 §6.2.1: asked again after the handshake; STARTTLS is no longer offered
    assert "IMAP4REV1" in client.capabilities
    assert "STARTTLS" not in client.capabilities
    await client.login(*mail_user)
    await client.logout()
    with pytest.raises(ConnectionLost) as lost:
        await ImapClient(timeout=10).connect(dovecot.host, dovecot.port, security="starttls")
    assert isinstance(lost.value.__cause__, ssl.SSLCertVerificationError)


# ---------------------------------------------------------------------------------- mailboxes


async def test_list_reports_special_use_folders(dovecot: DovecotServer, mail_user: tuple[str, str]) -> None:
    async with logged_in(dovecot, mail_user) as client:
        boxes = {box.name: box for box in await client.list_folders()}
    assert {"INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"} <= boxes.keys()
    assert "\\Sent" in boxes["Sent"].flags
    assert "\\Trash" in boxes["Trash"].flags
    assert boxes["INBOX"].delimiter == "/"


async def test_names_with_non_ascii_and_spaces(dovecot: DovecotServer, mail_user: tuple[str, str]) -> None:
    name = 'Entwürfe & "Pläne" 日本語 %x'
    async with logged_in(dovecot, mail_user) as client:
        await client.create(name)
        listed = [box for box in await client.list_folders() if box.name == name]
        assert len(listed) == 1
        assert listed[0].raw_name.isascii()
        assert b"&-" in listed[0].raw_name
        await client.append(name, message(1))
        assert (await client.status(name))["MESSAGES"] == 1
        box = await client.select(name)
        assert box.exists == 1
        by_raw = await client.select(listed[0].raw_name)  # bytes are sent as given
        assert by_raw.exists == 1
        await client.unselect()
        renamed = "Ünïcødé ✉ renamed"
        await client.rename(name, renamed)
        await client.subscribe(renamed)
        names = {box.name for box in await client.list_folders()}
        assert renamed in names
        assert name not in names
        await client.delete(renamed)
        assert renamed not in {box.name for box in await client.list_folders()}


async def test_select_missing_mailbox_fails_with_code(dovecot: DovecotServer, mail_user: tuple[str, str]) -> None:
    async with logged_in(dovecot, mail_user) as client:
        with pytest.raises(CommandFailed) as failed:
            await client.select("No Such Folder")
    assert failed.value.status == "NO"
    assert "doesn't exist" in failed.value.text  # Dovecot 2.3 gives no [NONEXISTENT] on SELECT


async def test_select_with_condstore_reports_modseq(dovecot: DovecotServer, mail_user: tuple[str, str]) -> None:
    async with logged_in(dovecot, mail_user) as client:
        for n in range(3):
            await client.append("INBOX", message(n))
        box = await client.select("INBOX", condstore=True)
        assert box.exists == 3
        assert box.uidvalidity is not None
        assert box.uidnext == 4
        assert box.highestmodseq is not None
        assert box.highestmodseq > 0
        assert "\\Seen" in box.flags
        assert "\\*" in box.permanentflags
        assert not box.readonly
        examined = await client.select("INBOX", readonly=True)
        assert examined.readonly


async def test_fetch_by_sequence_numbers_reads_the_newest(dovecot: DovecotServer, mail_user: tuple[str, str]) -> None:
    async with logged_in(dovecot, mail_user) as client:
        for n in range(5):
            await client.append("INBOX", message(n))
        await client.select("INBOX")
        await client.uid_store("2", "add", ["\\Deleted"])
        await client.expunge()  # UIDs 1, 3, 4, 5 at sequence numbers 1..4
        box = await client.select("INBOX")
        newest = await client.fetch(box.exists - 1, box.exists, "UID FLAGS RFC822.SIZE")
        assert sorted(i.uid or 0 for i in newest.items) == [4, 5]
        assert all(i.size for i in newest.items)
        with pytest.raises(ValueError, match="sequence range"):
            await client.fetch(0, 2, "UID")


async def test_qresync_select_reports_vanished_and_changed(dovecot: DovecotServer, mail_user: tuple[str, str]) -> None:
    async with logged_in(dovecot, mail_user) as client:
        for n in range(1, 6):
            await client.append("INBOX", message(n))
        before = await client.select("INBOX", condstore=True)
        assert before.uidvalidity is not None
        assert before.highestmodseq is not None
        await client.uid_store("4", "add", ["\\Flagged"])
        await client.uid_store("2:3", "add", ["\\Deleted"])
        await client.uid_expunge("2:3")

    async with logged_in(dovecot, mail_user) as client:
        after = await client.select("INBOX", qresync=(before.uidvalidity, before.highestmodseq, "1:5"))
        assert "QRESYNC" in client.enabled
        # RFC 7162 §3.2.5.2: VANISHED (EARLIER) for the expunged UIDs, FETCH for changed flags
        assert after.vanished == [2, 3]
        changed = {item.uid: item for item in after.changed}
        assert "\\Flagged" in (changed[4].flags or ())
        assert after.highestmodseq is not None
        assert after.highestmodseq > before.highestmodseq

        fetched = await client.uid_fetch("1:*", "UID FLAGS", changedsince=before.highestmodseq, vanished=True)
        assert fetched.vanished == [2, 3]
        assert [item.uid for item in fetched.items] == [4]


# ------------------------------------------------------------------------------ append / fetch


async def test_append_returns_appenduid_and_fetch_is_byte_exact(
    dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    big = big_attachment_message()
    when = datetime(2024, 2, 29, 13, 14, 15, tzinfo=UTC)
    async with logged_in(dovecot, mail_user, timeout=60) as client:
        first = await client.append("INBOX", EIGHT_BIT, flags=["\\Seen", "$Work"], date=when)
        second = await client.append("INBOX", big)
        assert first is not None
        assert second is not None
        assert second == (first[0], first[1] + 1)
        box = await client.select("INBOX")
        assert box.uidvalidity == first[0]
        result = await client.uid_fetch([first[1], second[1]], FULL)
    by_uid = {item.uid: item for item in result.items}
    assert by_uid[first[1]].body == EIGHT_BIT
    assert by_uid[second[1]].body == big
    assert by_uid[first[1]].size == len(EIGHT_BIT)
    assert set(by_uid[first[1]].flags or ()) - {"\\Recent"} == {"\\Seen", "$Work"}
    assert by_uid[first[1]].internaldate == when
    assert by_uid[first[1]].x_guid


async def test_append_without_literal_plus_waits_for_continuation(
    dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    async with logged_in(dovecot, mail_user) as client:
        # Pretend the server lacks RFC 7888 so the synchronizing literal path runs.
        client._capabilities = client.capabilities - {"LITERAL+", "LITERAL-"}
        appended = await client.append("INBOX", EIGHT_BIT)
        assert appended is not None
        # A refused literal: the server answers NO instead of "+", and the connection goes on.
        with pytest.raises(CommandFailed):
            await client.append("No Such Folder", b"x" * 100)
        await client.select("INBOX")
        fetched = await client.uid_fetch(str(appended[1]), "BODY.PEEK[]")
        assert fetched.items[0].body == EIGHT_BIT


async def test_pipelined_fetches_get_their_own_responses(dovecot: DovecotServer, mail_user: tuple[str, str]) -> None:
    async with logged_in(dovecot, mail_user) as client:
        for n in range(1, 41):
            await client.append("INBOX", message(n, b"x" * (n * 997)))
        await client.select("INBOX", condstore=True)
        ranges = ["1:10", "11:20", "21:30", "31:40"]
        results = await asyncio.gather(*(client.uid_fetch(r, FULL) for r in ranges))
        flags_only = await asyncio.gather(*(client.uid_fetch(r, "UID FLAGS MODSEQ") for r in ranges))
    for start, result in zip((1, 11, 21, 31), results, strict=True):
        assert [item.uid for item in result.items] == list(range(start, start + 10))
        for item in result.items:
            assert item.uid is not None
            assert item.body == message(item.uid, b"x" * (item.uid * 997))
    assert [len(r.items) for r in flags_only] == [10, 10, 10, 10]
    assert client.unsolicited == []


async def test_pipelined_mixed_commands_each_get_their_answer(
    dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    async with logged_in(dovecot, mail_user) as client:
        for n in range(1, 4):
            await client.append("INBOX", message(n), flags=["\\Seen"] if n == 2 else [])
        await client.append("Drafts", message(9))
        await client.select("INBOX")
        inbox, drafts, sent, seen, fetched, plain_seen = await asyncio.gather(
            client.status("INBOX", ["MESSAGES"]),
            client.status("Drafts", ["MESSAGES"]),
            client.status("Sent", ["MESSAGES"]),
            client.uid_search("SEEN"),
            client.uid_fetch("1:*", "UID FLAGS"),
            client.uid_search("UNSEEN"),
        )
    assert (inbox, drafts, sent) == ({"MESSAGES": 3}, {"MESSAGES": 1}, {"MESSAGES": 0})
    assert seen == [2]
    assert plain_seen == [1, 3]
    assert [i.uid for i in fetched.items] == [1, 2, 3]


async def test_search_with_esearch_and_plain_search(dovecot: DovecotServer, mail_user: tuple[str, str]) -> None:
    async with logged_in(dovecot, mail_user) as client:
        for n in range(1, 8):
            await client.append("INBOX", message(n), flags=["\\Seen"] if n % 2 else [])
        await client.select("INBOX")
        assert await client.uid_search("SEEN") == [1, 3, 5, 7]
        assert await client.uid_search([b"NOT", b"SEEN"]) == [2, 4, 6]
        assert await client.uid_search("SUBJECT nothing-matches") == []
        client._capabilities = client.capabilities - {"ESEARCH"}
        assert await client.uid_search("SEEN") == [1, 3, 5, 7]
        # plain `* SEARCH` names no command: pipelined searches must still get their own answers
        both = await asyncio.gather(client.uid_search("SEEN"), client.uid_search("UNSEEN"))
        assert list(both) == [[1, 3, 5, 7], [2, 4, 6]]


async def test_conditional_store_reports_modified(dovecot: DovecotServer, mail_user: tuple[str, str]) -> None:
    async with logged_in(dovecot, mail_user) as client:
        for n in range(3):
            await client.append("INBOX", message(n))
        box = await client.select("INBOX", condstore=True)
        assert box.highestmodseq is not None
        await client.uid_store("2", "add", ["\\Answered"])
        result = await client.uid_store("1:3", "add", ["\\Seen"], unchangedsince=box.highestmodseq)
        assert result.modified == [2]  # RFC 7162 §3.1.3: changed since, so left alone
        shown = await client.uid_store("1", "set", ["$Done"], silent=False)
        assert [(i.uid, set(i.flags or ()) - {"\\Recent"}) for i in shown.items] == [(1, {"$Done"})]
        with pytest.raises(ValueError, match="flag"):
            await client.uid_store("1", "add", ["bad flag"])


# ------------------------------------------------------------------------------------ move / copy


@pytest.mark.parametrize("has_move", [True, False])
async def test_move_keeps_x_guid(dovecot: DovecotServer, mail_user: tuple[str, str], has_move: bool) -> None:
    async with logged_in(dovecot, mail_user) as client:
        for n in range(3):
            await client.append("INBOX", message(n))
        await client.select("INBOX")
        guids = {i.uid: i.x_guid for i in (await client.uid_fetch("1:3", "UID X-GUID")).items}
        if not has_move:  # RFC 6851 missing: COPY + STORE \Deleted + UID EXPUNGE
            client._capabilities = client.capabilities - {"MOVE"}
        copied = await client.uid_move([1, 3], "Archive")
        assert copied is not None
        assert copied.source == (1, 3)
        remaining = await client.uid_fetch("1:*", "UID")
        assert [i.uid for i in remaining.items] == [2]
        archive = await client.select("Archive")
        assert archive.uidvalidity == copied.uidvalidity
        moved = await client.uid_fetch(list(copied.dest), "UID X-GUID")
    assert {i.uid: i.x_guid for i in moved.items} == {copied.mapping()[u]: guids[u] for u in (1, 3)}


async def test_copy_returns_copyuid(dovecot: DovecotServer, mail_user: tuple[str, str]) -> None:
    async with logged_in(dovecot, mail_user) as client:
        await client.append("INBOX", message(1))
        await client.select("INBOX")
        copied = await client.uid_copy("1", "Trash")
        assert copied is not None
        assert copied.source == (1,)
        assert len(copied.dest) == 1
        assert (await client.status("Trash", ["MESSAGES"])) == {"MESSAGES": 1}


# ----------------------------------------------------------------------------- push and changes


async def test_idle_sees_exists_after_append_elsewhere(dovecot: DovecotServer, mail_user: tuple[str, str]) -> None:
    async with logged_in(dovecot, mail_user) as watcher, logged_in(dovecot, mail_user) as other:
        await watcher.select("INBOX")
        async with watcher.idle() as events:
            assert await events.next(0.2) == []
            with pytest.raises(RuntimeError, match="IDLE"):
                await watcher.noop()
            await other.append("INBOX", message(1))
            pushed = await events.next(10)  # Dovecot holds notifications back ~0.5 s
        assert Exists(1) in pushed
        # the connection is usable again after DONE
        fetched = await watcher.uid_fetch("1:*", "UID")
        assert [i.uid for i in fetched.items] == [1]


async def test_idle_start_and_done_without_context_manager(dovecot: DovecotServer, mail_user: tuple[str, str]) -> None:
    async with logged_in(dovecot, mail_user) as watcher, logged_in(dovecot, mail_user) as other:
        await watcher.append("INBOX", message(1))
        await watcher.select("INBOX")
        await watcher.idle_start()
        await other.select("INBOX")
        await other.uid_store("1", "add", ["\\Deleted"])
        await other.uid_expunge("1")
        pushed = await watcher.wait_push(10)
        leftover = await watcher.idle_done()
        assert Expunge(1) in [*pushed, *leftover]


async def test_unsolicited_changes_are_queued(dovecot: DovecotServer, mail_user: tuple[str, str]) -> None:
    async with logged_in(dovecot, mail_user) as watcher, logged_in(dovecot, mail_user) as other:
        await other.append("INBOX", message(1))
        await watcher.select("INBOX", condstore=True)
        await other.select("INBOX")
        await other.append("INBOX", message(2))
        await other.uid_store("1", "add", ["\\Seen"])
        await asyncio.sleep(0.1)
        await watcher.noop()
        changes = watcher.drain_unsolicited()
        assert Exists(2) in changes
        flag_updates = [c for c in changes if isinstance(c, FetchItem)]
        assert flag_updates
        assert "\\Seen" in (flag_updates[0].flags or ())
        assert watcher.unsolicited == []


# ------------------------------------------------------------------------------- failure modes


class _Proxy:
    """A TCP relay to Dovecot that a test can cut (abort) or make silent (stall)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.stalled = False
        self.cut_after: int | None = None  # abort once this many server bytes have been relayed
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self._relayed = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers += [writer, up_writer]
        await asyncio.gather(self._pump(reader, up_writer, False), self._pump(up_reader, writer, True))

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, downstream: bool) -> None:
        with contextlib.suppress(OSError):
            while data := await src.read(4096):
                if downstream:
                    if self.stalled:
                        continue
                    self._relayed += len(data)
                    if self.cut_after is not None and self._relayed > self.cut_after:
                        dst.write(data[: len(data) // 2])
                        self.kill()
                        return
                dst.write(data)
                await dst.drain()

    def kill(self) -> None:
        for writer in self._writers:
            writer.transport.abort()

    async def close(self) -> None:
        self.kill()
        if self._server is not None:
            self._server.close()


async def test_connection_killed_mid_fetch_fails_every_pending_command(
    dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    async with logged_in(dovecot, mail_user) as seeder:
        for n in range(1, 21):
            await seeder.append("INBOX", message(n, b"y" * 50_000))
    proxy = _Proxy(dovecot.host, dovecot.port)
    await proxy.start()
    client = ImapClient(timeout=30)
    await client.connect("127.0.0.1", proxy.port, security="none")
    await client.login(*mail_user)
    await client.select("INBOX")
    proxy.cut_after = proxy._relayed + 300_000  # in the middle of the first FETCH's bodies
    started = asyncio.get_running_loop().time()
    results = await asyncio.gather(
        client.uid_fetch("1:10", "BODY.PEEK[]"), client.uid_fetch("11:20", "BODY.PEEK[]"), return_exceptions=True
    )
    assert all(isinstance(r, ConnectionLost) for r in results), results
    assert asyncio.get_running_loop().time() - started < 5  # failed at once, no wait for the timeout
    with pytest.raises(ConnectionLost):
        await client.noop()
    assert not client.is_connected
    await client.close()
    await proxy.close()


async def test_silent_server_raises_timeout(dovecot: DovecotServer, mail_user: tuple[str, str]) -> None:
    proxy = _Proxy(dovecot.host, dovecot.port)
    await proxy.start()
    client = ImapClient(timeout=10)
    await client.connect("127.0.0.1", proxy.port, security="none")
    await client.login(*mail_user)
    proxy.stalled = True
    with pytest.raises(ImapTimeout):
        await client.noop(timeout=0.3)
    await client.close()
    with pytest.raises(ConnectionLost):
        await client.noop()
    await proxy.close()


async def test_connect_to_closed_port_raises_connection_lost() -> None:
    with pytest.raises(ConnectionLost):
        await ImapClient().connect("127.0.0.1", free_port(), security="none", timeout=5)


async def test_garbage_from_server_fails_pending_commands_with_protocol_error() -> None:
    async def fake_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* OK [CAPABILITY IMAP4rev1] fake ready\r\n")
        await reader.readline()
        writer.write(b"* 1 FETCH (UID \x01)\r\n")  # not IMAP
        await writer.drain()
        await reader.read()

    server = await asyncio.start_server(fake_server, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = ImapClient(timeout=10)
    await client.connect("127.0.0.1", port, security="none")
    with pytest.raises(ProtocolError):
        await client.noop()
    with pytest.raises(ConnectionLost):
        await client.noop()
    await client.close()
    server.close()


# ---------------------------------------------------------------------------------- NOTIFY (RFC 5465)


async def test_notify_tells_of_other_mailboxes_changes_outside_idle(
    dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    async with logged_in(dovecot, mail_user) as watcher, logged_in(dovecot, mail_user) as other:
        await watcher.notify_set(b"(personal (MessageNew MessageExpunge FlagChange MailboxName))")
        before = watcher.notices
        await other.append("Archive", message(1))
        async with asyncio.timeout(10):  # Dovecot tells about half a second later, no command running
            while watcher.notices == before:
                await asyncio.sleep(0.02)
        # A STATUS for a mailbox nobody asked about is a notice, not an answer: the next STATUS is answered as usual.
        assert (await watcher.status("Archive", ("MESSAGES",)))["MESSAGES"] >= 1
        assert not [r for r in watcher.unsolicited if not isinstance(r, Exists | Expunge | FetchItem)]
