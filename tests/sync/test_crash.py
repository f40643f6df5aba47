"""A sync killed at any point of an initial sync resumes where it was: identical, no duplicate rows."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from inboxql.devmail import DovecotServer
from inboxql.mailgen import generate
from schema.crypto import CredentialBox
from schema.models import Message, MessagePlace
from schema.settings import Settings
from schema.unit import Store
from synccore.folder import BODY_BATCH
from tests.imapproxy import ImapProxy
from tests.sync.support import add_account, assert_identical, fold_log, mirror_objects

INBOXQL = str(Path(sys.executable).with_name("inboxql"))


def _env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "INBOXQL_DATABASE_URL": settings.database_url,
        "INBOXQL_REDIS_URL": settings.redis_url,
        "INBOXQL_SECRET_KEY": settings.secret_key,
    }


@pytest.mark.slow
async def test_sigkill_during_initial_sync_resumes_without_duplicates(
    settings: Settings,
    store: Store,
    credential_box: CredentialBox,
    dovecot: DovecotServer,
    mail_user: tuple[str, str],
) -> None:
    user, password = mail_user
    mail = list(generate(2400, seed=42))
    dovecot.append(user, password, "INBOX", mail[:1800])
    dovecot.append(user, password, "Archive", mail[1800:])
    account_id = await add_account(store, credential_box, dovecot, user, password)
    rng = random.Random(7)
    command = [INBOXQL, "sync", "--once", "--account", str(account_id)]

    kills = 0
    for _ in range(4):
        proc = await asyncio.create_subprocess_exec(*command, env=_env(settings), stderr=asyncio.subprocess.DEVNULL)
        try:
            await asyncio.wait_for(proc.wait(), timeout=rng.uniform(1.0, 3.0))
        except TimeoutError:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            kills += 1
        else:
            break
    assert kills >= 1, "the sync finished before it could be killed: make the mailbox larger"

    proc = await asyncio.create_subprocess_exec(*command, env=_env(settings))
    assert await asyncio.wait_for(proc.wait(), timeout=300) == 0

    await assert_identical(store, credential_box, account_id)
    async with store.sessions() as s:
        messages = await s.scalar(select(func.count()).select_from(Message).where(Message.account_id == account_id))
        places = await s.scalar(
            select(func.count()).select_from(MessagePlace).where(MessagePlace.account_id == account_id)
        )
    assert (messages, places) == (2400, 2400)
    assert await fold_log(store, account_id) == await mirror_objects(store, account_id)


async def _mirrored(store: Store, account_id: int) -> dict[str, int]:
    async with store.sessions() as s:
        rows = await s.execute(select(Message.identity, Message.id).where(Message.account_id == account_id))
        return {identity: mid for identity, mid in rows}


async def test_a_killed_initial_sync_resumes_and_fetches_only_what_is_missing(
    settings: Settings,
    store: Store,
    credential_box: CredentialBox,
    dovecot: DovecotServer,
    mail_user: tuple[str, str],
) -> None:
    """Progress is committed batch by batch: killed once two batches are in, the next run downloads only the rest
    (bodies counted on the wire) and the messages already mirrored keep their ids."""
    user, password = mail_user
    total = 6 * BODY_BATCH
    dovecot.append(user, password, "INBOX", list(generate(total, seed=43)))
    async with ImapProxy(dovecot.host, dovecot.port) as proxy:
        account_id = await add_account(store, credential_box, dovecot, user, password, via=proxy)
        command = [INBOXQL, "sync", "--once", "--account", str(account_id)]
        proc = await asyncio.create_subprocess_exec(*command, env=_env(settings), stderr=asyncio.subprocess.DEVNULL)
        try:
            async with asyncio.timeout(120):
                while len(await _mirrored(store, account_id)) < 2 * BODY_BATCH and proc.returncode is None:
                    await asyncio.sleep(0.02)
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGKILL)
            await proc.wait()
        assert proc.returncode == -signal.SIGKILL, "the sync finished before it could be killed: no batch committed?"
        # A COMMIT sent just before the kill may still land: read until the mirror stands still.
        before: dict[str, int] = {}
        while (settled := await _mirrored(store, account_id)) != before:
            before = settled
            await asyncio.sleep(0.5)
        assert 2 * BODY_BATCH <= len(before) < total

        proxy.clear()
        proc = await asyncio.create_subprocess_exec(*command, env=_env(settings))
        assert await asyncio.wait_for(proc.wait(), timeout=300) == 0

        assert proxy.bodies == total - len(before)
        after = await _mirrored(store, account_id)
        assert len(after) == total
        assert {identity: after.get(identity) for identity in before} == before
        await assert_identical(store, credential_box, account_id)
    assert await fold_log(store, account_id) == await mirror_objects(store, account_id)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # The command name (field 2) may hold spaces; the parent pid is the second field after it.
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _descendants(pid: int) -> list[int]:
    found = _children(pid)
    for child in list(found):
        found += _descendants(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_sigkilled_sync_leaves_no_worker_behind(
    settings: Settings,
    store: Store,
    credential_box: CredentialBox,
    dovecot: DovecotServer,
    mail_user: tuple[str, str],
) -> None:
    user, password = mail_user
    dovecot.append(user, password, "INBOX", list(generate(300, seed=5)))
    account_id = await add_account(store, credential_box, dovecot, user, password)
    command = [INBOXQL, "sync", "--account", str(account_id)]
    proc = await asyncio.create_subprocess_exec(*command, env=_env(settings), stderr=asyncio.subprocess.DEVNULL)
    try:
        # The MIME workers start with the first batch to parse: forked by multiprocessing's fork server, which
        # starts beside its resource tracker. All three must go with the sync process.
        async with asyncio.timeout(60):
            while len(children := _descendants(proc.pid)) < 3:
                await asyncio.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    async with asyncio.timeout(10):
        while left := [pid for pid in children if _alive(pid)]:
            await asyncio.sleep(0.1)
    assert left == []
