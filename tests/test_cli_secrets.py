"""`inboxql secret rotate | prune`: every stored credential re-sealed under a new key while a running sync
process, started with the old key ring, keeps logging in; a key given in INBOXQL_SECRET_KEY cannot be rotated."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import select, update

from gateway.testing import Client, start_gateway
from inboxql.devmail import DovecotServer
from schema import keyring, webhooks
from schema.crypto import CredentialBox, KeyRing, Purpose
from schema.db import create_engine, session_factory
from schema.models import Account, Webhook
from schema.settings import Settings
from schema.unit import Store
from tests.conftest import new_user, throwaway_database
from tests.gateway.test_webhooks import CREATE, FAST, Receiver, eventually, make_changes, new_tenant, serve
from tests.test_cli import assert_unguarded, guard_dir, inboxql
from tests.test_cli_accounts import add_account, mail, message_ids, read_until, running_sync, wait_for

__all__ = ["guard_dir"]


@pytest.fixture
def own_database() -> Iterator[str]:
    """Rotation re-seals every credential of its database: it gets one of its own, sealed with its keys only."""
    with throwaway_database("inboxql_rotation_test") as url:
        yield url


@pytest.fixture
def ring_env(own_database: str, guard_dir: Path, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INBOXQL_")}
    env.update(
        INBOXQL_DATABASE_URL=own_database,
        INBOXQL_SECRET_KEY_FILE=str(tmp_path / "keys" / "secret.key"),
        INBOXQL_REDIS_URL=os.environ.get("INBOXQL_REDIS_URL", "redis://127.0.0.1:6379/0"),
        PYTHONPATH=os.pathsep.join([str(guard_dir), *filter(None, [env.get("PYTHONPATH")])]),
    )
    return env


def legacy_seal(secret: str, plaintext: str) -> bytes:
    """A value as the release before key ids sealed it."""
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"inboxql credentials v1").derive(
        secret.encode()
    )
    return Fernet(base64.urlsafe_b64encode(derived)).encrypt(plaintext.encode())


async def test_rotation_reseals_every_credential_while_a_running_sync_keeps_logging_in(
    ring_env: dict[str, str], own_database: str, dovecot: DovecotServer
) -> None:
    path = Path(ring_env["INBOXQL_SECRET_KEY_FILE"])
    user, password = new_user(dovecot)
    dovecot.append(user, password, "INBOX", [mail("before the rotation")])
    account_id = await add_account(ring_env, dovecot, user, password)  # creates the ring: key 1
    (first,) = keyring.read(path)
    engine = create_engine(own_database, pool_size=2)
    try:
        box = CredentialBox(KeyRing.load(path))
        async with session_factory(engine)() as s, s.begin():
            _, hook_secret = await webhooks.create(s, box, account_id, "https://example.com/hook", ["*"])
            # An SMTP password stored by the release before key ids (untagged): rotation re-seals it too.
            await s.execute(
                update(Account)
                .where(Account.id == account_id)
                .values(smtp_password=legacy_seal(first.secret, "smtp-pw"))
            )
        async with running_sync(ring_env, account_id) as sync:
            await read_until(sync, rf"account {account_id}: syncing")

            async def synced(n: int) -> bool:
                return len(await message_ids(engine, account_id)) == n

            await wait_for(lambda: synced(1))
            rotated = await inboxql(ring_env, "secret", "rotate")
            assert rotated.code == 0, rotated.stderr
            assert rotated.stdout.startswith("key 2 seals from now on; 3 credentials re-sealed with it")
            assert [k.id for k in keyring.read(path)] == [2, 1]
            assert path.stat().st_mode & 0o777 == 0o600

            async with session_factory(engine)() as s:
                account = await s.get(Account, account_id)
                hook = await s.scalar(select(Webhook).where(Webhook.account_id == account_id))
            assert account is not None
            assert hook is not None
            assert account.smtp_password is not None
            assert account.imap_password is not None
            fresh = CredentialBox(KeyRing.load(path))
            for sealed in (account.imap_password, account.smtp_password, hook.secret):
                assert fresh.key_id(sealed) == 2
            assert fresh.open(account.imap_password, Purpose.ACCOUNT) == password
            assert fresh.open(account.smtp_password, Purpose.ACCOUNT) == "smtp-pw"
            assert fresh.open(hook.secret, Purpose.WEBHOOK) == hook_secret

            # The running process holds only key 1: dropped by the server, it logs in again with the password
            # now sealed under key 2, and mail keeps arriving.
            dovecot.doveadm("kick", user)
            dovecot.append(user, password, "INBOX", [mail("after the rotation")])
            await wait_for(lambda: synced(2))
            assert sync.returncode is None

        pruned = await inboxql(ring_env, "secret", "prune")
        assert pruned.code == 0, pruned.stderr
        assert [k.id for k in keyring.read(path)] == [2]
        verified = await inboxql(ring_env, "verify", str(account_id))
        assert (verified.code, verified.stdout) == (0, "identical\n"), verified.stderr
        assert_unguarded(verified)
    finally:
        await engine.dispose()


async def test_a_key_from_the_environment_cannot_be_rotated_and_says_how(ring_env: dict[str, str]) -> None:
    env = {**ring_env, "INBOXQL_SECRET_KEY": "a key in the environment"}
    done = await inboxql(env, "secret", "rotate")
    assert (done.code, done.stdout) == (2, "")
    assert "INBOXQL_SECRET_KEY_FILE" in done.stderr
    assert not Path(ring_env["INBOXQL_SECRET_KEY_FILE"]).exists()


async def test_rotations_at_once_lose_no_key(ring_env: dict[str, str]) -> None:
    """Each rotation adds its own key under the lock: four more at once leave keys 1 to 6, none overwritten."""
    first = await inboxql(ring_env, "secret", "rotate")
    assert first.code == 0, first.stderr
    done = await asyncio.gather(*(inboxql(ring_env, "secret", "rotate") for _ in range(4)))
    assert [d.code for d in done] == [0] * 4, [d.stderr for d in done]
    assert sorted(k.id for k in keyring.read(Path(ring_env["INBOXQL_SECRET_KEY_FILE"]))) == [1, 2, 3, 4, 5, 6]


async def test_a_running_gateway_keeps_signing_webhooks_across_a_rotation(
    ring_env: dict[str, str], own_database: str
) -> None:
    """The gateway started with key 1 only: after `secret rotate` re-sealed the hook's secret under key 2, its
    deliveries are still signed with the right secret, and what it seals from then on is under key 2."""
    path = Path(ring_env["INBOXQL_SECRET_KEY_FILE"])
    settings = Settings.from_env(ring_env)  # creates the ring: key 1
    engine = create_engine(own_database, pool_size=2)
    store = Store(engine)
    receiver = Receiver()
    sink = serve(receiver.app())
    gateway = start_gateway(settings, FAST)
    try:
        tenant = await new_tenant(store, settings)
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
            admin = Client(http, tenant.token)
            created = (await admin.data(CREATE, {"a": tenant.gid, "u": f"{sink.url}/hook", "e": ["*"]}))[
                "createWebhook"
            ]
            receiver.secret = created["secret"]
            rotated = await inboxql(ring_env, "secret", "rotate")
            assert rotated.code == 0, rotated.stderr
            async with store.sessions() as s:
                (sealed,) = await s.scalars(select(Webhook.secret).where(Webhook.account_id == tenant.account))
            assert CredentialBox.key_id(sealed) == 2

            # Before it has opened anything sealed under key 2: sealing alone reads the new ring. (This hook wants
            # messages, and only folders change below: the receiver sees the first hook's events only.)
            second = (await admin.data(CREATE, {"a": tenant.gid, "u": f"{sink.url}/hook", "e": ["message"]}))[
                "createWebhook"
            ]
            await make_changes(store, tenant, 3)

            async def delivered() -> bool:
                return len(receiver.accepted) >= 3

            await eventually(delivered)
            assert receiver.bad_signatures == 0
        async with store.sessions() as s:
            newest = await s.scalar(
                select(Webhook.secret).where(Webhook.account_id == tenant.account).order_by(Webhook.id.desc()).limit(1)
            )
        assert newest is not None
        assert CredentialBox.key_id(newest) == 2  # the running gateway sealed with the key added after it started
        assert CredentialBox(KeyRing.load(path)).open(newest, Purpose.WEBHOOK) == second["secret"]
    finally:
        gateway.stop()
        sink.stop()
        await engine.dispose()
