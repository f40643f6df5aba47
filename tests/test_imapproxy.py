"""The test IMAP proxy itself (tests.imapproxy): what it pretends, what it records, that it passes literals."""

from __future__ import annotations

import asyncio

from inboxql.devmail import DovecotServer
from inboxql.mailgen import generate
from synccore.identity import IdentityMode, detect
from synccore.imap import ImapClient
from tests.conftest import new_user
from tests.imapproxy import ImapProxy


async def _client(proxy: ImapProxy, user: str, password: str) -> ImapClient:
    client = ImapClient(timeout=10)
    await client.connect(proxy.host, proxy.port, security="none")
    await client.login(user, password)
    return client


async def test_the_proxy_hides_or_offers_identities_and_records_the_wire(dovecot: DovecotServer) -> None:
    user, password = new_user(dovecot)
    dovecot.append(user, password, "INBOX", list(generate(3, seed=71)))
    async with ImapProxy(dovecot.host, dovecot.port) as proxy:
        seen = {}
        for name, hide, offer in [("plain", False, False), ("hidden", True, False), ("objectid", False, True)]:
            proxy.hide_identity, proxy.offer_objectid = hide, offer
            client = await _client(proxy, user, password)
            seen[name] = await detect(client)
            await client.select("INBOX")
            fetched = await client.uid_fetch("1:*", "(UID BODY.PEEK[] EMAILID)" if offer else "(UID BODY.PEEK[])")
            if offer:
                assert all(i.email_id and i.email_id.startswith("M") for i in fetched.items)
            await client.logout()
        assert seen == {"plain": IdentityMode.XGUID, "hidden": IdentityMode.HASH, "objectid": IdentityMode.OBJECTID}
        assert proxy.bodies == 9
        [refused] = [e for e in proxy.exchanges if e.refused]
        assert "X-GUID" in refused.command
        assert refused.status.split()[1] == "BAD"
        assert all(password not in e.command for e in proxy.exchanges)


async def test_the_proxy_passes_synchronizing_literals_and_holds_answers(dovecot: DovecotServer) -> None:
    user, password = new_user(dovecot)
    async with ImapProxy(dovecot.host, dovecot.port) as proxy:
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        await reader.readline()
        message = b"Subject: literal\r\n\r\nbody\r\n"
        writer.write(f"a LOGIN {user} {password}\r\nb APPEND INBOX {{{len(message)}}}\r\n".encode())
        while not (line := await reader.readline()).startswith(b"+"):  # RFC 3501 §4.3: wait for the go-ahead
            assert not line.startswith(b"b "), line
        writer.write(message + b"\r\n")
        while not (line := await reader.readline()).startswith(b"b "):
            pass
        assert line.startswith(b"b OK")

        held = proxy.hold(lambda e: e.verb == "NOOP")
        writer.write(b"c NOOP\r\n")
        await asyncio.wait_for(held.seen.wait(), 10)
        assert not reader.at_eof()
        early = asyncio.ensure_future(reader.readline())
        await asyncio.sleep(0.2)
        assert not early.done()  # the server answered; the client has not heard
        proxy.release(held)
        assert (await asyncio.wait_for(early, 10)).startswith(b"c OK")
        writer.write(b"d LOGOUT\r\n")
        await reader.read()
        writer.close()
        await writer.wait_closed()
        append = proxy.commands("APPEND")[0]
        assert append.command == f"b APPEND INBOX {{{len(message)}}} "
        assert append.status.startswith("b OK")
