"""Following an account: new mail pushed by IDLE is mirrored and its doorbell rung within a second."""

from __future__ import annotations

import asyncio
import contextlib
import time

from redis.asyncio import Redis

from inboxql.devmail import DovecotServer
from inboxql.mailgen import generate
from schema.crypto import CredentialBox
from schema.unit import Store
from synccore.account import AccountSync, Tuning
from tests.sync.support import add_account, connect, sync_once, wait_for_messages


async def test_appended_message_is_mirrored_and_rung_within_a_second(
    store: Store, credential_box: CredentialBox, redis: Redis, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    user, password = mail_user
    mail = generate(20, seed=31)
    dovecot.append(user, password, "INBOX", [next(mail) for _ in range(10)])
    account_id = await add_account(store, credential_box, dovecot, user, password)
    await sync_once(store, credential_box, account_id)

    pubsub = redis.pubsub()
    await pubsub.subscribe(store.doorbells.channel(account_id))
    follower = asyncio.create_task(
        AccountSync(store, credential_box, account_id, Tuning(poll_interval=60)).run_forever()
    )
    other = await connect(dovecot, user, password)
    try:
        await asyncio.sleep(1.0)  # the follower is idling on the inbox
        while await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05):
            pass
        delays = []
        for n in range(3):
            started = time.monotonic()
            await other.append("INBOX", next(mail))
            async with asyncio.timeout(5):
                while (msg := await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)) is None:
                    pass
            rung = time.monotonic() - started
            await wait_for_messages(store, account_id, 11 + n, timeout=1)
            assert int(msg["data"]) > 0
            delays.append(rung)
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
        await other.logout()
        await pubsub.aclose()
    # Dovecot itself holds IDLE notifications back about half a second (FIELD-NOTES).
    assert min(delays) < 1.0, delays
    assert max(delays) < 3.0, delays
