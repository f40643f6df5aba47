"""A slow link and a stalled one, made real by a TCP proxy (tests/throttle.py) between the sync and Dovecot.

The sync's IMAP timeout is one of inactivity: bodies that take longer in total than the timeout still come
through a link that keeps moving, and a link that stops moving is given up after the timeout, its connection
closed, and the sync carries on over a new one."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from inboxql.devmail import DovecotServer
from inboxql.mailgen import generate
from schema import accounts
from schema.crypto import CredentialBox
from schema.models import Account, MessagePlace
from schema.unit import Store
from synccore.account import AccountSync, Tuning
from synccore.verify import verify
from tests.throttle import Throttle


def padded(count: int, size: int, seed: int) -> list[bytes]:
    """Generated mail, each message padded with a text part to about `size` bytes."""
    out = []
    for raw in generate(count, seed=seed):
        head, _, body = raw.partition(b"\r\n\r\n")
        filler = b"".join(b"padding line %06d of a long message body\r\n" % n for n in range(size // 42))
        out.append(head + b"\r\n\r\n" + body + b"\r\n" + filler)
    return out


async def account_behind(store: Store, box: CredentialBox, port: int, user: str, password: str) -> int:
    endpoint = accounts.ImapEndpoint("127.0.0.1", port, "none", user)
    return await accounts.create(store, box, f"{user}@example.test", endpoint, password)


async def placed(store: Store, account_id: int) -> int:
    async with store.sessions() as s:
        found = await s.scalar(
            select(func.count()).select_from(MessagePlace).where(MessagePlace.account_id == account_id)
        )
    return found or 0


async def state(store: Store, account_id: int) -> str | None:
    async with store.sessions() as s:
        return await s.scalar(select(Account.sync_state).where(Account.id == account_id))


async def test_a_slow_but_moving_link_syncs_bodies_that_take_longer_than_the_timeout(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    user, password = mail_user
    mail = padded(40, 50_000, seed=41)  # 2 MB of bodies in one batch (one UID FETCH)
    dovecot.append(user, password, "INBOX", mail)
    # Seconds, not less: the proxy shares the event loop with the sync, and a busy machine can pause both.
    timeout = 2.5
    async with Throttle(dovecot.host, dovecot.port, rate=200_000) as link:
        account_id = await account_behind(store, credential_box, link.port, user, password)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await AccountSync(
            store, credential_box, account_id, Tuning(poll_interval=0.2, imap_inactivity=timeout)
        ).run_once()
        took = loop.time() - started
        assert sum(len(m) for m in mail) / 200_000 > 3 * timeout  # the bodies alone need over 3x the timeout
        assert took > 3 * timeout
        assert not any(k.stalled for k in link.links)
        assert await placed(store, account_id) == 40
        link.rate = None  # verify reads every body again: at full speed
        assert await verify(store, credential_box, account_id) == []


async def test_a_stalled_link_is_detected_by_inactivity_and_the_sync_recovers(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    user, password = mail_user
    dovecot.append(user, password, "INBOX", padded(60, 30_000, seed=42))  # 1.8 MB
    dovecot.append(user, password, "Archive", padded(10, 5_000, seed=43))
    timeout = 2.0
    tuning = Tuning(
        poll_interval=0.3, imap_inactivity=timeout, backoff_base=0.2, backoff_cap=1.0, batch_bytes=256 << 10
    )
    async with Throttle(dovecot.host, dovecot.port) as link:
        link.stall_once_after = 600_000  # the pass's connection dies mid-download, its sockets left open
        account_id = await account_behind(store, credential_box, link.port, user, password)
        sync = asyncio.create_task(AccountSync(store, credential_box, account_id, tuning).run_forever())
        try:
            async with asyncio.timeout(60):
                while await placed(store, account_id) < 70 or await state(store, account_id) != "ready":
                    assert not sync.done(), sync.exception() if sync.done() else None
                    await asyncio.sleep(0.1)
        finally:
            sync.cancel()
            await asyncio.gather(sync, return_exceptions=True)
        [stalled] = [k for k in link.links if k.stalled]
        assert stalled.stalled_at is not None
        assert stalled.closed_at is not None, "the sync never gave the stalled connection up"
        # Given up after the inactivity timeout (not a total deadline, not never), then a new connection went on.
        assert timeout * 0.9 <= stalled.closed_at - stalled.stalled_at < timeout + 5
        assert link.links.index(stalled) < len(link.links) - 1
        assert await verify(store, credential_box, account_id) == []
