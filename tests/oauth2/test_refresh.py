"""Access tokens over a sync's life: refreshed ahead of expiry without a failed pass, refreshed once more when the
server refuses one, and a revoked grant marks the account needs_consent (visible in the API) without a retry storm.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from sqlalchemy import select

from inboxql.devmail import DovecotServer
from schema import accounts
from schema.crypto import CredentialBox, Purpose
from schema.models import Account, Folder, MessagePlace
from schema.unit import Store
from synccore.account import AccountSync, Tuning
from synccore.tokens import TokenKeeper
from tests.imap.test_client import message
from tests.oauth2.conftest import CLIENT, PROVIDER
from tests.oauth2server import AuthServer, Token


async def add_oauth2_account(
    store: Store, box: CredentialBox, dovecot: DovecotServer, user: str, granted: Token
) -> int:
    endpoint = accounts.ImapEndpoint(dovecot.host, dovecot.port, "none", user)
    assert granted.refresh_token is not None
    grant = accounts.OAuth2Grant(
        PROVIDER,
        granted.refresh_token,
        granted.access_token,
        datetime.fromtimestamp(granted.issued_at + granted.expires_in, UTC).replace(tzinfo=None),
    )
    return await accounts.create(store, box, f"{user}@example.test", endpoint, None, oauth2=grant)


async def inbox_count(store: Store, account_id: int) -> int:
    async with store.sessions() as s:
        rows = await s.scalars(
            select(MessagePlace.uid)
            .join(Folder, Folder.id == MessagePlace.folder_id)
            .where(Folder.account_id == account_id, Folder.role == "inbox")
        )
        return len(list(rows))


async def account_row(store: Store, account_id: int) -> Account:
    async with store.sessions() as s:
        row = await s.get(Account, account_id)
    assert row is not None
    return row


async def test_tokens_that_expire_between_passes_are_refreshed_without_a_failed_pass(
    store: Store,
    credential_box: CredentialBox,
    oauth_dovecot: DovecotServer,
    auth_server: AuthServer,
    oauth_user: tuple[str, str],
    provider_env: dict[str, str],
) -> None:
    """Tokens live 4 s and are replaced 1 s before they expire; eight passes at least 0.5 s apart, each on a new
    connection (a new login), each with new mail: every pass succeeds, every message is mirrored, the server never
    saw an expired token, and the provider was asked about once per token lifetime (the run's length divided by
    3 s, plus one), not once per login. The bound is taken from the run's own length: on a loaded machine the
    passes take longer, and more tokens expire during them."""
    user, password = oauth_user
    lifetime, ahead, passes = 4, 1.0, 8
    auth_server.state.access_lifetime = lifetime
    account_id = await add_oauth2_account(
        store, credential_box, oauth_dovecot, user, auth_server.grant(CLIENT[0], user)
    )
    keeper = TokenKeeper(store, credential_box, env=provider_env, ahead=ahead)
    sync = AccountSync(store, credential_box, account_id, Tuning(poll_interval=0.2), tokens=keeper)
    before = auth_server.state.requests.copy()
    started = time.monotonic()
    for n in range(passes):
        oauth_dovecot.append(user, password, "INBOX", [message(n)])
        await sync.run_once()  # raises if a login failed
        row = await account_row(store, account_id)
        assert (row.sync_state, row.sync_error) == ("ready", None)
        await asyncio.sleep(0.5)
    elapsed = time.monotonic() - started
    assert await inbox_count(store, account_id) == passes
    asked = auth_server.state.requests - before
    assert asked["introspect:inactive"] == 0, "the server was shown an expired token"
    assert keeper.refreshes == asked["token:refresh_token"]
    assert 1 <= keeper.refreshes <= elapsed / (lifetime - ahead) + 1, (keeper.refreshes, elapsed)
    assert keeper.refreshes < passes
    # Refresh tokens rotate: the stored one is the newest, and it still works.
    row = await account_row(store, account_id)
    assert row.oauth2_refresh_token is not None
    stored = credential_box.open(row.oauth2_refresh_token, Purpose.ACCOUNT)
    assert auth_server.state.by_refresh(stored) is not None
    assert not auth_server.state.by_refresh(stored).refresh_revoked  # type: ignore[union-attr]


async def test_a_refused_access_token_is_refreshed_once_and_the_login_tried_again(
    store: Store,
    credential_box: CredentialBox,
    oauth_dovecot: DovecotServer,
    auth_server: AuthServer,
    oauth_user: tuple[str, str],
    keeper: TokenKeeper,
) -> None:
    user, password = oauth_user
    granted = auth_server.grant(CLIENT[0], user)
    account_id = await add_oauth2_account(store, credential_box, oauth_dovecot, user, granted)
    auth_server.revoke_access(granted.access_token)  # still cached as good for an hour
    oauth_dovecot.append(user, password, "INBOX", [message(1)])
    await AccountSync(store, credential_box, account_id, Tuning(poll_interval=0.2), tokens=keeper).run_once()
    assert keeper.refreshes == 1
    assert await inbox_count(store, account_id) == 1
    assert (await account_row(store, account_id)).sync_state == "ready"


async def test_a_revoked_grant_marks_the_account_needs_consent_once_with_no_retry_storm(
    store: Store,
    credential_box: CredentialBox,
    oauth_dovecot: DovecotServer,
    auth_server: AuthServer,
    oauth_user: tuple[str, str],
    keeper: TokenKeeper,
) -> None:
    """The user withdrew consent: the cached token is refused, the refresh is refused (invalid_grant), and the
    account stops as needs_consent after one request to the token endpoint. Following it again (a restart, the
    supervisor's rescan) asks the provider nothing more."""
    user, _password = oauth_user
    account_id = await add_oauth2_account(
        store, credential_box, oauth_dovecot, user, auth_server.grant(CLIENT[0], user)
    )
    tuning = Tuning(poll_interval=0.2, backoff_base=0.01, backoff_cap=0.05)
    await AccountSync(store, credential_box, account_id, tuning, tokens=keeper).run_once()
    auth_server.revoke_user(user)
    before = auth_server.state.requests.copy()
    async with asyncio.timeout(30):
        await AccountSync(store, credential_box, account_id, tuning, tokens=keeper).run_forever()
        # again, as after a restart, with a keeper of its own
        fresh = TokenKeeper(store, credential_box, env=keeper.env)
        await AccountSync(store, credential_box, account_id, tuning, tokens=fresh).run_forever()
    await asyncio.sleep(1.0)
    asked = auth_server.state.requests - before
    assert asked["token:refresh_token"] == 1
    assert keeper.refreshes + fresh.refreshes == 1
    row = await account_row(store, account_id)
    assert row.sync_state == accounts.NEEDS_CONSENT
    assert row.sync_error is not None
    assert "invalid_grant" in row.sync_error
    assert row.oauth2_access_token is None


async def test_a_server_that_refuses_every_fresh_token_stops_the_account_after_one_refresh(
    store: Store,
    credential_box: CredentialBox,
    oauth_dovecot: DovecotServer,
    auth_server: AuthServer,
    oauth_user: tuple[str, str],
    keeper: TokenKeeper,
) -> None:
    """The provider keeps granting (and rotating refresh tokens) but the mail server refuses each token, as Gmail
    does for a user who turned IMAP off: one refresh, one more login, then needs_consent, not a loop of refreshes
    (a rotated refresh token must not look like a new consent)."""
    user, _ = oauth_user
    stranger = auth_server.grant(CLIENT[0], f"not-{user}")  # a grant of another user: Dovecot refuses its tokens
    account_id = await add_oauth2_account(store, credential_box, oauth_dovecot, user, stranger)
    tuning = Tuning(poll_interval=0.2, backoff_base=0.01, backoff_cap=0.05)
    before = auth_server.state.requests.copy()
    async with asyncio.timeout(30):
        await AccountSync(store, credential_box, account_id, tuning, tokens=keeper).run_forever()
    asked = auth_server.state.requests - before
    assert asked["token:refresh_token"] == 1
    row = await account_row(store, account_id)
    assert row.sync_state == accounts.NEEDS_CONSENT
    assert row.sync_error is not None
    assert "refused a fresh access token" in row.sync_error
