"""`inboxql account add --oauth2 NAME --refresh-token-stdin`: an account that logs in with OAuth2.

The refresh token is turned into an access token first (through the provider's token endpoint: oauth.refresh),
the IMAP login (and the SMTP one, when sending is configured) is checked with it, and only then is the account
stored, with the refresh token and the access token sealed. Nothing printed or logged holds a token.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import oauth
from inboxql.commands import check_logins
from schema import accounts
from schema.crypto import CredentialBox
from schema.db import create_engine
from schema.redisconn import connect
from schema.settings import Settings
from schema.unit import Store
from synccore.connection import Endpoint


async def account_add_oauth2(
    settings: Settings,
    host: str,
    port: int,
    security: str,
    username: str,
    provider_name: str,
    refresh_token: str,
    *,
    address: str | None,
    tls_ca_file: str | None,
    allow_insecure: bool,
    smtp: accounts.SmtpSettings | None = None,
) -> int:
    try:
        provider = oauth.provider(provider_name)
        granted = await oauth.refresh(provider, refresh_token)
    except oauth.ProviderNotConfigured as exc:
        print(f"inboxql: {exc}", file=sys.stderr)
        return 2
    except oauth.GrantRefused as exc:
        print(f"inboxql: {provider_name} refused the refresh token ({exc.error}); nothing was stored", file=sys.stderr)
        return 1
    except oauth.TokenEndpointUnavailable as exc:
        print(f"inboxql: {provider_name}: {exc}; nothing was stored", file=sys.stderr)
        return 1
    endpoint = Endpoint(host, port, security, username, "", tls_ca_file, granted.access_token)
    refused = await check_logins(endpoint, smtp, allow_insecure=allow_insecure)
    if refused is not None:
        return refused
    grant = accounts.OAuth2Grant(
        provider.name,
        granted.refresh_token or refresh_token,  # a provider that rotates gave a new one; the old one is spent
        granted.access_token,
        datetime.fromtimestamp(granted.expires_at, UTC).replace(tzinfo=None),
    )
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        store = Store(engine, connect(settings.redis_url))
        if address is None:
            address = username if "@" in username else f"{username}@{host}"
        imap = accounts.ImapEndpoint(host, port, security, username, tls_ca_file)
        box = CredentialBox(settings.key_ring())
        account_id = await accounts.create(store, box, address, imap, None, smtp, oauth2=grant)
        if store.redis is not None:
            await store.redis.aclose()
    finally:
        await engine.dispose()
    print(account_id)
    return 0
