"""Connecting: TLS verified by default, refused logins stop retries until the credentials change."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from inboxql.devmail import DovecotServer
from inboxql.mailgen import generate
from schema import accounts
from schema.crypto import CredentialBox
from schema.models import Account
from schema.unit import Store
from synccore.account import AccountSync, AuthStopped, Tuning
from synccore.connection import Endpoint, InsecureConnection, open_client
from synccore.imap import ConnectionLost
from tests.sync.support import add_account, assert_identical, sync_once


async def _state(store: Store, account_id: int) -> str:
    async with store.sessions() as s:
        state = await s.scalar(select(Account.sync_state).where(Account.id == account_id))
    assert state is not None
    return state


async def test_tls_is_verified_against_the_given_ca_only(dovecot: DovecotServer, mail_user: tuple[str, str]) -> None:
    user, password = mail_user
    trusted = Endpoint(dovecot.host, dovecot.tls_port, "tls", user, password, str(dovecot.ca_file))
    client = await open_client(trusted)
    assert client.is_connected
    await client.logout()
    with pytest.raises(ConnectionLost):
        await open_client(Endpoint(dovecot.host, dovecot.tls_port, "tls", user, password))


async def test_plaintext_to_a_remote_host_is_refused_before_connecting() -> None:
    with pytest.raises(InsecureConnection):
        await open_client(Endpoint("192.0.2.10", 143, "none", "someone", "secret"))


async def test_an_account_over_verified_tls_syncs(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    user, password = mail_user
    dovecot.append(user, password, "INBOX", list(generate(15, seed=51)))
    endpoint = accounts.ImapEndpoint(dovecot.host, dovecot.tls_port, "tls", user, str(dovecot.ca_file))
    account_id = await accounts.create(store, credential_box, f"{user}@example.test", endpoint, password)
    await sync_once(store, credential_box, account_id)
    await assert_identical(store, credential_box, account_id)


async def test_refused_login_marks_the_account_and_stops_until_new_credentials(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    user, password = mail_user
    account_id = await add_account(store, credential_box, dovecot, user, password)
    await sync_once(store, credential_box, account_id)
    dovecot.set_password(user, "changed-on-the-server")

    with pytest.raises(AuthStopped):
        await sync_once(store, credential_box, account_id)
    assert await _state(store, account_id) == "auth_failed"
    # The follower gives up at once instead of retrying in a loop.
    sync = AccountSync(store, credential_box, account_id, Tuning(backoff_base=0.01))
    await asyncio.wait_for(sync.run_forever(), timeout=10)

    await accounts.set_password(store, credential_box, account_id, "changed-on-the-server")
    assert await _state(store, account_id) == "pending"
    await sync_once(store, credential_box, account_id)
    assert await _state(store, account_id) == "ready"


async def test_a_dead_server_gets_backoff_not_a_crash_loop(
    store: Store, credential_box: CredentialBox, mail_user: tuple[str, str]
) -> None:
    user, password = mail_user
    from inboxql.devmail import free_port

    endpoint = accounts.ImapEndpoint("127.0.0.1", free_port(), "none", user)
    account_id = await accounts.create(store, credential_box, "dead@example.test", endpoint, password)
    sync = AccountSync(store, credential_box, account_id, Tuning(backoff_base=0.2, backoff_cap=0.4))
    task = asyncio.create_task(sync.run_forever())
    await asyncio.sleep(1.5)
    assert not task.done()
    task.cancel()
    assert await _state(store, account_id) == "error"
    async with store.sessions() as s:
        error = await s.scalar(select(Account.sync_error).where(Account.id == account_id))
    assert error is not None
    assert "ConnectionLost" in error
    assert password not in error
