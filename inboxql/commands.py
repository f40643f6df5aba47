"""What the command line runs: each returns a process exit code."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

from schema import accounts
from schema.crypto import CredentialBox
from schema.db import create_database, create_engine, session_factory
from schema.migrate import upgrade
from schema.redisconn import connect
from schema.settings import Settings
from schema.unit import Store
from synccore.account import Tuning
from synccore.connection import Endpoint, InsecureConnection, open_client
from synccore.imap import AuthenticationFailed, ImapError
from synccore.supervisor import Supervisor
from synccore.verify import verify as verify_account

log = logging.getLogger("inboxql")


async def db_upgrade(settings: Settings) -> int:
    if await create_database(settings.database_url):
        log.info("created the database")
    # Alembic's env.py runs its own event loop: give it a thread of its own.
    await asyncio.to_thread(upgrade, settings.database_url)
    log.info("the database is at the newest revision")
    return 0


async def account_add(
    settings: Settings,
    host: str,
    port: int,
    security: str,
    username: str,
    password: str,
    *,
    address: str | None,
    tls_ca_file: str | None,
    allow_insecure: bool,
    smtp: accounts.SmtpSettings | None = None,
) -> int:
    endpoint = Endpoint(host, port, security, username, password, tls_ca_file)
    try:
        client = await open_client(endpoint, allow_insecure=allow_insecure)
    except InsecureConnection as exc:
        print(f"inboxql: {exc} (or pass --allow-insecure)", file=sys.stderr)
        return 2
    except AuthenticationFailed:
        print(f"inboxql: the server refused the login of {username!r}; nothing was stored", file=sys.stderr)
        return 1
    except (ImapError, OSError) as exc:
        print(f"inboxql: cannot reach {host}:{port}: {exc}; nothing was stored", file=sys.stderr)
        return 1
    await client.logout()
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        store = Store(engine, connect(settings.redis_url))
        if address is None:
            address = username if "@" in username else f"{username}@{host}"
        imap = accounts.ImapEndpoint(host, port, security, username, tls_ca_file)
        box = CredentialBox(settings.secret_key)
        account_id = await accounts.create(store, box, address, imap, password, smtp)
        if store.redis is not None:
            await store.redis.aclose()
    finally:
        await engine.dispose()
    print(account_id)
    return 0


async def sync(settings: Settings, *, once: bool, accounts: Sequence[int] | None, poll: float) -> int:
    supervisor = Supervisor(settings, Tuning(poll_interval=poll))
    try:
        if once:
            return await supervisor.run_once(accounts)
        await supervisor.run_forever(accounts)
        return 0
    finally:
        await supervisor.close()


async def verify(settings: Settings, account_id: int) -> int:
    """Differences go to standard output, one a line, then their count; exit 0 only when identical."""
    engine = create_engine(settings.database_url, pool_size=2)
    try:
        diffs = await verify_account(Store(engine), CredentialBox(settings.secret_key), account_id)
    except LookupError as exc:
        print(f"inboxql: {exc}", file=sys.stderr)
        return 2
    finally:
        await engine.dispose()
    for line in diffs:
        print(line)
    if diffs:
        print(f"{len(diffs)} differences")
        return 1
    print("identical")
    return 0


def gateway(settings: Settings, host: str, port: int) -> int:
    from gateway.server import serve

    serve(settings, host, port)
    return 0


async def new_token(
    settings: Settings, account_ids: Sequence[int], *, admin: bool = False, read_only: bool = False
) -> str:
    """A new token for these accounts (admin: it may also manage their webhooks; read_only: no mutation); its
    plaintext, shown once.

    Raises schema.tokens.UnknownAccounts when an account does not exist.
    """
    from schema import tokens

    engine = create_engine(settings.database_url, pool_size=1)
    try:
        async with session_factory(engine)() as session, session.begin():
            return await tokens.create_token(session, account_ids, admin=admin, read_only=read_only)
    finally:
        await engine.dispose()


async def token_create(
    settings: Settings, account_ids: Sequence[int], *, admin: bool = False, read_only: bool = False
) -> int:
    from schema.tokens import UnknownAccounts

    try:
        token = await new_token(settings, account_ids, admin=admin, read_only=read_only)
    except UnknownAccounts as exc:
        print(f"inboxql: {exc}; no token was created", file=sys.stderr)
        return 1
    print(token)
    return 0


async def outbox_list(settings: Settings, *, every: bool) -> int:
    """One line an entry: id, account, state, when, recipients, and why for failed and uncertain sends."""
    from schema import outbox

    wanted = None if every else [outbox.OutboxState.QUEUED, outbox.OutboxState.FAILED, outbox.OutboxState.UNCERTAIN]
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        async with session_factory(engine)() as session:
            entries = await outbox.listing(session, wanted)
    finally:
        await engine.dispose()
    for e in entries:
        when = (e.sent_at or e.send_at).isoformat(timespec="seconds")
        why = f"  {e.error}" if e.error and e.state != outbox.OutboxState.SENT else ""
        print(f"{e.id}\taccount {e.account_id}\t{e.state}\t{when}\t{', '.join(e.recipients)}{why}")
    return 0
