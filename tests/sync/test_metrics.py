"""What the sync core counts (ops.metrics) where it happens: errors by kind, reconnects, refused logins, and a new
account's first message, read from this process's registry after a real sync against the test Dovecot."""

from __future__ import annotations

import asyncio
import ssl

import pytest
from prometheus_client import REGISTRY
from sqlalchemy.exc import OperationalError

from inboxql.devmail import DovecotServer, free_port
from inboxql.mailgen import generate
from schema import accounts, actions
from schema.crypto import CredentialBox
from schema.settings import Settings
from schema.unit import Store
from synccore.account import AccountSync, AuthStopped, LoginDeferred, Tuning, error_kind
from synccore.imap import AuthenticationFailed, CommandFailed, ConnectionLost, ImapTimeout, ProtocolError
from synccore.supervisor import Supervisor
from tests.conftest import new_user
from tests.sync.support import add_account


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (AuthenticationFailed("LOGIN", "NO", "Authentication failed"), "auth"),
        (AuthStopped("refused"), "auth"),
        (LoginDeferred("[UNAVAILABLE] later"), "refused"),
        (CommandFailed("SELECT", "NO", "Internal error"), "refused"),
        (ImapTimeout("no byte for 60 s"), "timeout"),
        (ConnectionLost("reset"), "connection"),
        (ConnectionRefusedError(111, "refused"), "connection"),
        (ssl.SSLCertVerificationError("bad certificate"), "connection"),
        (ProtocolError("unparsable"), "protocol"),
        (OperationalError("SELECT 1", {}, Exception("gone away")), "database"),
        (ExceptionGroup("in a task group", [ImapTimeout("slow")]), "timeout"),
        (ValueError("a bug"), "other"),
    ],
)
def test_errors_are_counted_by_a_kind_from_a_fixed_set(error: BaseException, kind: str) -> None:
    assert error_kind(error) == kind


async def test_a_server_that_refuses_connections_counts_connection_errors_and_reconnects(
    store: Store, credential_box: CredentialBox
) -> None:
    endpoint = accounts.ImapEndpoint("127.0.0.1", free_port(), "none", "nobody")  # nothing listens there
    account_id = await accounts.create(store, credential_box, "nobody@example.test", endpoint, "secret")
    errors, reconnects = _value("inboxql_imap_errors_total", kind="connection"), _value("inboxql_imap_reconnects_total")
    tuning = Tuning(backoff_base=0.05, backoff_cap=0.1)
    task = asyncio.create_task(AccountSync(store, credential_box, account_id, tuning).run_forever())
    await asyncio.sleep(1.0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await accounts.remove(store, account_id, wait_seconds=0)
    counted = _value("inboxql_imap_errors_total", kind="connection") - errors
    assert counted >= 2
    assert _value("inboxql_imap_reconnects_total") - reconnects == counted


async def test_a_refused_login_counts_one_auth_error_and_no_reconnect(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer
) -> None:
    user, _ = new_user(dovecot)
    account_id = await add_account(store, credential_box, dovecot, user, "not-the-password")
    errors, reconnects = _value("inboxql_imap_errors_total", kind="auth"), _value("inboxql_imap_reconnects_total")
    tuning = Tuning(backoff_base=0.01, backoff_cap=0.02)
    await asyncio.wait_for(AccountSync(store, credential_box, account_id, tuning).run_forever(), 30)
    assert _value("inboxql_imap_errors_total", kind="auth") - errors == 1
    # Plain NOs are retried a few times before they count as refused credentials: those were reconnects.
    assert _value("inboxql_imap_reconnects_total") - reconnects < 3


async def test_a_new_accounts_first_message_is_timed_once_and_its_messages_counted(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer
) -> None:
    user, password = new_user(dovecot)
    dovecot.append(user, password, "INBOX", generate(30, seed=5))
    account_id = await add_account(store, credential_box, dovecot, user, password)
    timed, mirrored = _value("inboxql_first_message_seconds_count"), _value("inboxql_messages_mirrored_total")
    sync = AccountSync(store, credential_box, account_id, Tuning(poll_interval=0.2))
    await sync.run_once()
    assert _value("inboxql_first_message_seconds_count") - timed == 1
    assert _value("inboxql_messages_mirrored_total") - mirrored == 30
    # Not new any more: another sync (a restart: a new AccountSync) times nothing.
    await AccountSync(store, credential_box, account_id, Tuning(poll_interval=0.2)).run_once()
    assert _value("inboxql_first_message_seconds_count") - timed == 1


async def test_an_empty_mailbox_times_no_first_message(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer
) -> None:
    """An account with no mail is not waiting for any: its first pass ends the measure, so mail that arrives a
    week later is not a week-long onboarding."""
    user, password = new_user(dovecot)
    account_id = await add_account(store, credential_box, dovecot, user, password)
    timed = _value("inboxql_first_message_seconds_count")
    sync = AccountSync(store, credential_box, account_id, Tuning(poll_interval=0.2))
    await sync.run_once()
    dovecot.append(user, password, "INBOX", generate(1, seed=6))
    await sync.run_once()
    assert _value("inboxql_first_message_seconds_count") == timed


async def test_the_supervisor_measures_accounts_by_state_and_the_action_queue(
    settings: Settings, store: Store, credential_box: CredentialBox
) -> None:
    endpoint = accounts.ImapEndpoint("127.0.0.1", free_port(), "none", "nobody")
    account_id = await accounts.create(store, credential_box, "queue@example.test", endpoint, "secret")
    supervisor = Supervisor(settings)
    other = account_id
    try:
        await supervisor.measure(await supervisor.accounts())
        queued, pending = _value("inboxql_action_queue_depth"), _value("inboxql_accounts", state="pending")
        async with store.unit(account_id) as uow:
            await actions.create_folder(uow, "Projects", "/")
        other = await accounts.create(store, credential_box, "other@example.test", endpoint, "secret")
        await supervisor.measure(await supervisor.accounts())
        assert _value("inboxql_action_queue_depth") - queued == 1
        assert _value("inboxql_accounts", state="pending") - pending == 1
        assert _value("inboxql_db_pool_size") >= 20  # the supervisor's pool: 10, and 10 more in overflow
    finally:
        await supervisor.close()
        for gone in (account_id, other):  # accounts on a dead port: no other test should meet them
            await accounts.remove(store, gone, wait_seconds=0)
