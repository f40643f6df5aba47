"""`inboxql sync`'s supervisor with an OAuth2 account whose grant was revoked: it stops as needs_consent, the
process's rescans ask the provider nothing more, and a new grant (what the consent flow stores) resumes it."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import pytest

from inboxql.devmail import DovecotServer
from schema import accounts
from schema.crypto import CredentialBox
from schema.settings import Settings
from schema.unit import Store
from synccore import supervisor as supervisor_module
from synccore.account import Tuning
from synccore.supervisor import Supervisor
from tests.imap.test_client import message
from tests.oauth2.conftest import CLIENT, PROVIDER
from tests.oauth2.test_refresh import account_row, add_oauth2_account, inbox_count
from tests.oauth2server import AuthServer


async def _wait_state(store: Store, account_id: int, wanted: str) -> None:
    async with asyncio.timeout(60):
        while (await account_row(store, account_id)).sync_state != wanted:
            await asyncio.sleep(0.1)


async def test_a_revoked_grant_stops_the_account_without_a_storm_and_a_new_grant_resumes_it(
    settings: Settings,
    store: Store,
    credential_box: CredentialBox,
    oauth_dovecot: DovecotServer,
    auth_server: AuthServer,
    oauth_user: tuple[str, str],
    provider_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in provider_env.items():
        monkeypatch.setenv(key, value)  # the supervisor's providers come from the environment
    monkeypatch.setattr(supervisor_module, "RESCAN_SECONDS", 0.5)
    user, password = oauth_user
    account_id = await add_oauth2_account(
        store, credential_box, oauth_dovecot, user, auth_server.grant(CLIENT[0], user)
    )
    auth_server.revoke_user(user)
    before = auth_server.state.requests.copy()
    supervisor = Supervisor(settings, Tuning(poll_interval=0.3, backoff_base=0.01, backoff_cap=0.05))
    task = asyncio.create_task(supervisor.run_forever([account_id]))
    try:
        await _wait_state(store, account_id, accounts.NEEDS_CONSENT)
        await asyncio.sleep(3)  # rescans go by
        asked = auth_server.state.requests - before
        assert asked["token:refresh_token"] == 1
        assert asked["introspect:inactive"] == 1  # the one login with the revoked access token

        oauth_dovecot.append(user, password, "INBOX", [message(1)])
        fresh = auth_server.grant(CLIENT[0], user)
        assert fresh.refresh_token is not None
        expires = datetime.fromtimestamp(fresh.issued_at + fresh.expires_in, UTC).replace(tzinfo=None)
        grant = accounts.OAuth2Grant(PROVIDER, fresh.refresh_token, fresh.access_token, expires)
        assert await accounts.reauthorize(store, credential_box, account_id, grant)
        await _wait_state(store, account_id, "ready")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await supervisor.close()
    assert await inbox_count(store, account_id) == 1
