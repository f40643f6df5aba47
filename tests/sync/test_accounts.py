"""Connecting: TLS verified by default, refused logins stop retries until the credentials change."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from inboxql.devmail import DovecotServer
from inboxql.mailgen import generate
from schema import accounts
from schema.crypto import CredentialBox
from schema.db import create_engine
from schema.models import Account, Message
from schema.unit import Store
from synccore.account import AccountSync, AuthStopped, LoginDeferred, Tuning
from synccore.connection import Endpoint, InsecureConnection, Refusal, open_client, refusal
from synccore.imap import AuthenticationFailed, ConnectionLost
from synccore.imap.responses import ResponseCode
from tests.conftest import new_user
from tests.sync.support import add_account, assert_identical, connect, sync_once


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


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        ("NO", "AUTHENTICATIONFAILED", Refusal.WRONG),
        ("NO", "AUTHORIZATIONFAILED", Refusal.WRONG),
        ("NO", "EXPIRED", Refusal.WRONG),
        ("NO", "UNAVAILABLE", Refusal.TEMPORARY),
        ("NO", "LIMIT", Refusal.TEMPORARY),
        ("NO", "INUSE", Refusal.TEMPORARY),
        ("NO", None, Refusal.UNCLEAR),
        ("BAD", None, Refusal.TEMPORARY),
        ("BAD", "AUTHENTICATIONFAILED", Refusal.TEMPORARY),
    ],
)
def test_a_refused_login_is_read_by_its_rfc_5530_code(status: str, code: str | None, expected: Refusal) -> None:
    exc = AuthenticationFailed("LOGIN", status, "refused", ResponseCode(code) if code else None)
    assert refusal(exc) is expected


@pytest.fixture(scope="module")
def switched_dovecot() -> Iterator[DovecotServer]:
    """A Dovecot whose password database fails temporarily for a user on demand."""
    root = Path(tempfile.mkdtemp(prefix="inboxql-dovecot-auth-"))
    server = DovecotServer(root, auth_switch=True)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


def _temporary_failures(dovecot: DovecotServer, user: str) -> int:
    lines = dovecot.log_file.read_text(errors="replace").splitlines()
    return sum(1 for line in lines if "temporary failure" in line and f"user=<{user}>" in line)


async def _wait_state(store: Store, account_id: int, wanted: str, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while await _state(store, account_id) != wanted:
            await asyncio.sleep(0.1)


async def test_a_temporary_login_refusal_backs_off_and_syncs_once_auth_is_back(
    store: Store, credential_box: CredentialBox, switched_dovecot: DovecotServer
) -> None:
    dovecot = switched_dovecot
    user, password = new_user(dovecot)
    dovecot.append(user, password, "INBOX", list(generate(12, seed=91)))
    account_id = await add_account(store, credential_box, dovecot, user, password)
    dovecot.set_auth_unavailable(user)
    # The real answer, over the wire.
    with pytest.raises(AuthenticationFailed, match=r"\[UNAVAILABLE\]"):
        await open_client(Endpoint(dovecot.host, dovecot.port, "none", user, password))
    with pytest.raises(LoginDeferred):
        await sync_once(store, credential_box, account_id)
    assert await _state(store, account_id) == "pending"

    sync = AccountSync(store, credential_box, account_id, Tuning(poll_interval=0.3, backoff_base=0.2, backoff_cap=1))
    task = asyncio.create_task(sync.run_forever())
    try:
        await _wait_state(store, account_id, "error", timeout=30)
        async with store.sessions() as s:
            error = await s.scalar(select(Account.sync_error).where(Account.id == account_id))
        assert error is not None
        assert "UNAVAILABLE" in error
        assert password not in error
        # Refused again while it lasts (Dovecot's log counts the attempts): still retrying, not given up.
        async with asyncio.timeout(60):
            while _temporary_failures(dovecot, user) < 4:  # 2 above, 2 of the follower
                assert not task.done()
                await asyncio.sleep(0.2)
        assert not task.done()
        assert await _state(store, account_id) == "error"

        dovecot.set_auth_unavailable(user, False)
        await _wait_state(store, account_id, "ready", timeout=60)
        await assert_identical(store, credential_box, account_id)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_wrong_password_gives_up_and_new_credentials_sync_again(
    store: Store, credential_box: CredentialBox, switched_dovecot: DovecotServer
) -> None:
    dovecot = switched_dovecot
    user, password = new_user(dovecot)
    dovecot.append(user, password, "INBOX", list(generate(5, seed=92)))
    endpoint = accounts.ImapEndpoint(dovecot.host, dovecot.port, "none", user)
    account_id = await accounts.create(store, credential_box, f"{user}@example.test", endpoint, "not-the-password")
    sync = AccountSync(store, credential_box, account_id, Tuning(backoff_base=0.01))
    await asyncio.wait_for(sync.run_forever(), timeout=30)  # [AUTHENTICATIONFAILED]: gives up at once
    assert await _state(store, account_id) == "auth_failed"

    await accounts.set_password(store, credential_box, account_id, password)
    await sync_once(store, credential_box, account_id)
    assert await _state(store, account_id) == "ready"
    await assert_identical(store, credential_box, account_id)


async def _plain_no_server(logins: list[str]) -> asyncio.Server:
    """An IMAP server that refuses every LOGIN with a plain NO and no reason, as some servers do for a wrong
    password (Dovecot always names one, so this stands in for them, on the real wire protocol)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* OK [CAPABILITY IMAP4rev1 IDLE] ready\r\n")
        while line := await reader.readline():
            tag, _, rest = line.decode().partition(" ")
            if rest.upper().startswith("LOGIN"):
                logins.append(rest)
                writer.write(f"{tag} NO LOGIN failed.\r\n".encode())
            elif rest.upper().startswith("LOGOUT"):
                writer.write(f"* BYE\r\n{tag} OK bye\r\n".encode())
                break
            else:
                writer.write(f"{tag} BAD unexpected\r\n".encode())
            await writer.drain()
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


async def test_repeated_plain_refusals_give_up_but_one_backs_off(store: Store, credential_box: CredentialBox) -> None:
    logins: list[str] = []
    server = await _plain_no_server(logins)
    port = server.sockets[0].getsockname()[1]
    try:
        endpoint = accounts.ImapEndpoint("127.0.0.1", port, "none", "someone")
        account_id = await accounts.create(store, credential_box, "plain@example.test", endpoint, "secret")
        with pytest.raises(LoginDeferred):
            await sync_once(store, credential_box, account_id)  # one plain NO: not a verdict yet
        assert await _state(store, account_id) == "pending"
        sync = AccountSync(store, credential_box, account_id, Tuning(backoff_base=0.05, backoff_cap=0.1))
        await asyncio.wait_for(sync.run_forever(), timeout=30)
        assert len(logins) == 1 + 3
        assert await _state(store, account_id) == "auth_failed"
    finally:
        server.close()
        await server.wait_closed()


async def test_credentials_replaced_during_a_refused_login_are_not_marked_failed(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    user, password = mail_user
    account_id = await add_account(store, credential_box, dovecot, user, password)
    async with store.sessions() as s:
        tried = await s.scalar(select(Account.imap_password).where(Account.id == account_id))
    assert tried is not None
    await accounts.set_password(store, credential_box, account_id, password)  # replaced after `tried` was read
    async with store.unit(account_id) as uow:
        assert not await accounts.refuse_credentials(uow, tried, "NO [AUTHENTICATIONFAILED]")
    assert await _state(store, account_id) == "pending"
    async with store.sessions() as s:
        current = await s.scalar(select(Account.imap_password).where(Account.id == account_id))
    assert current is not None
    async with store.unit(account_id) as uow:
        assert await accounts.refuse_credentials(uow, current, "NO [AUTHENTICATIONFAILED]")
    assert await _state(store, account_id) == "auth_failed"


async def test_a_second_connection_refused_with_limit_polls_the_inbox_instead_of_giving_up(
    store: Store, credential_box: CredentialBox
) -> None:
    """Dovecot answers a login beyond mail_max_userip_connections with `NO [LIMIT]`: here the account's IDLE
    connection, since another client holds one of the two allowed."""
    root = Path(tempfile.mkdtemp(prefix="inboxql-dovecot-limit-"))
    dovecot = DovecotServer(root, max_user_connections=2)
    dovecot.start()
    try:
        user, password = new_user(dovecot)
        dovecot.append(user, password, "INBOX", list(generate(4, seed=93)))
        account_id = await add_account(store, credential_box, dovecot, user, password)
        other = await connect(dovecot, user, password)  # the user's mail client
        sync = AccountSync(store, credential_box, account_id, Tuning(poll_interval=0.3, backoff_base=0.2))
        task = asyncio.create_task(sync.run_forever())
        try:
            await _wait_state(store, account_id, "ready", timeout=30)
            await other.append("INBOX", next(iter(generate(1, seed=94))))
            async with asyncio.timeout(30):  # new mail still arrives, by polling
                while await _message_count(store, account_id) < 5:
                    assert not task.done()
                    await asyncio.sleep(0.1)
            assert await _state(store, account_id) == "ready"
            # Both allowed connections are taken (the client's, the sync's passes): the limit is in force.
            with pytest.raises(AuthenticationFailed, match=r"\[LIMIT\]"):
                await connect(dovecot, user, password)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await other.logout()
        await assert_identical(store, credential_box, account_id)
    finally:
        dovecot.stop()
        shutil.rmtree(root, ignore_errors=True)


async def _message_count(store: Store, account_id: int) -> int:
    async with store.sessions() as s:
        found = await s.scalar(select(func.count()).select_from(Message).where(Message.account_id == account_id))
    return found or 0


async def test_retries_after_a_database_error_wait_at_most_the_database_cap(
    credential_box: CredentialBox, caplog: pytest.LogCaptureFixture
) -> None:
    """MySQL refusing connections (nothing listens on the port): the account retries within the database cap,
    not after the IMAP backoff that protects servers."""
    from inboxql.devmail import free_port

    engine = create_engine(f"mysql+asyncmy://root@127.0.0.1:{free_port()}/nowhere?charset=utf8mb4", pool_size=1)
    sync = AccountSync(Store(engine), credential_box, 1, Tuning(backoff_base=60, database_retry_cap=0.1))
    task = asyncio.create_task(sync.run_forever())
    try:
        with caplog.at_level("WARNING", logger="synccore.account"):
            await asyncio.sleep(1.5)
        assert not task.done()
        retries = [r.getMessage() for r in caplog.records if "reconnecting in" in r.getMessage()]
        assert len(retries) >= 3, retries
        assert all("OperationalError" in r and r.endswith("reconnecting in 0.1 s") for r in retries), retries
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await engine.dispose()
