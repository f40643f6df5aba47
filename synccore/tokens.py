"""Access tokens for OAuth2 accounts: refreshed ahead of expiry, shared, and never asked for in a storm.

    login wanted -> cached token good for more than `ahead` s? -> use it
                 -> else refresh (oauth.refresh, authlib) -> cache it sealed in MySQL -> use it
    server refused token T -> `access_token(replacing=T)`: refreshed once more (unless another connection did
                 meanwhile) -> the caller logs in once more -> refused again: `refuse` marks needs_consent
    provider refused the grant (invalid_grant: revoked, expired) -> needs_consent at once, `ConsentNeeded`
    token endpoint unreachable -> `TokenUnavailable` (a ConnectionError: the account's backoff retries it)

The cache lives in the account row (sealed), so the sync process's connections, the outbox and a restarted process
use one token rather than each refreshing; one lock per account in this process makes concurrent logins wait for
one refresh. An account marked needs_consent is never refreshed again until a new grant replaces its refresh token
(`schema.accounts.reauthorize`), so a revoked grant costs the provider one request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from datetime import datetime, timedelta

import oauth
from schema import accounts
from schema.crypto import CredentialBox, Purpose
from schema.models import Account, utcnow
from schema.retry import retry_deadlocks
from schema.unit import Store

log = logging.getLogger(__name__)

# Refresh when the cached token has less than this left: a login, and the commands right after it, should never
# race the expiry (providers issue tokens for an hour; Google and Microsoft both).
REFRESH_AHEAD = 300.0


class ConsentNeeded(Exception):
    """The provider refused the account's grant, or the server refused a fresh token: the account is marked
    needs_consent and waits for the user to consent again."""


class TokenUnavailable(ConnectionError):
    """No access token now (the token endpoint is down, or the provider is not configured here): try again after
    a backoff. A ConnectionError, like a refused connection, so every retry path of the sync core covers it."""


class TokenKeeper:
    """Access tokens of the OAuth2 accounts one process syncs. `env` holds the providers' settings (default: the
    process environment); `ahead` is how long before expiry a cached token is replaced."""

    def __init__(
        self, store: Store, box: CredentialBox, *, env: Mapping[str, str] | None = None, ahead: float = REFRESH_AHEAD
    ) -> None:
        self.store = store
        self.box = box
        self.env = env
        self.ahead = ahead
        self.refreshes = 0  # token endpoint requests made (tests count them)
        self._locks: dict[int, asyncio.Lock] = {}
        # The sealed refresh token behind the access token last handed out, per account: what `refuse` must find
        # still stored. Not the one read before a refresh, which a rotating provider has replaced since.
        self._grant: dict[int, bytes] = {}

    async def access_token(self, account_id: int, *, replacing: str | None = None) -> str:
        """A token good for at least `ahead` seconds more; with `replacing` (a token the server just refused), one
        other than it. Raises ConsentNeeded or TokenUnavailable."""
        lock = self._locks.setdefault(account_id, asyncio.Lock())
        async with lock:
            async with self.store.sessions() as s:
                account = await s.get(Account, account_id)
            if account is None or account.oauth2_provider is None or account.oauth2_refresh_token is None:
                raise ConsentNeeded(f"account {account_id} has no OAuth2 grant")
            if account.sync_state == accounts.NEEDS_CONSENT:
                raise ConsentNeeded(account.sync_error or "the provider refused the grant")
            cached = self._cached(account)
            if cached is not None and cached != replacing:
                self._grant[account_id] = account.oauth2_refresh_token
                return cached
            return await self._refresh(account)

    def grant(self, account_id: int) -> bytes | None:
        """The sealed refresh token behind the access token last handed out for the account (for `refuse`)."""
        return self._grant.get(account_id)

    def _cached(self, account: Account) -> str | None:
        if account.oauth2_access_token is None or account.oauth2_expires_at is None:
            return None
        if account.oauth2_expires_at - utcnow() <= timedelta(seconds=self.ahead):
            return None
        return self.box.open(account.oauth2_access_token, Purpose.ACCOUNT)

    async def _refresh(self, account: Account) -> str:
        assert account.oauth2_provider is not None
        assert account.oauth2_refresh_token is not None
        tried = account.oauth2_refresh_token
        try:
            provider = oauth.provider(account.oauth2_provider, self.env)
        except oauth.ProviderNotConfigured as exc:
            raise TokenUnavailable(str(exc)) from None
        self.refreshes += 1
        try:
            granted = await oauth.refresh(provider, self.box.open(tried, Purpose.ACCOUNT))
        except oauth.GrantRefused as exc:
            reason = f"{provider.name} refused the grant ({exc}): consent again"
            await self.refuse(account.id, tried, reason)
            raise ConsentNeeded(reason) from None
        except oauth.TokenEndpointUnavailable as exc:
            raise TokenUnavailable(f"{provider.name}: {exc}") from None
        expires = utcnow() + timedelta(seconds=max(0.0, granted.expires_at - time.time()))
        holds = await self.store_refreshed(account.id, tried, granted, expires)
        if holds is not None:
            self._grant[account.id] = holds
        else:  # a new consent replaced the grant meanwhile: this token is of the old one, let a refusal not count
            self._grant.pop(account.id, None)
        log.info("account %s: access token refreshed (%s)", account.id, provider.name)
        return granted.access_token

    async def store_refreshed(
        self, account_id: int, tried: bytes, granted: oauth.TokenSet, expires: datetime
    ) -> bytes | None:
        async def step() -> bytes | None:
            return await accounts.cache_tokens(
                self.store, self.box, account_id, tried, granted.access_token, expires, granted.refresh_token
            )

        return await retry_deadlocks(step)

    async def refuse(self, account_id: int, tried: bytes | None, reason: str) -> bool:
        """Mark the account needs_consent unless its grant changed since `tried` was read (None: unknown, so it
        is not marked)."""
        if tried is None:
            return False

        async def step() -> bool:
            async with self.store.unit(account_id) as uow:
                return await accounts.refuse_grant(uow, tried, reason)

        marked = await retry_deadlocks(step)
        if marked:
            log.warning("account %s: %s", account_id, reason)
        return marked
