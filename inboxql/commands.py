"""What the command line runs: each returns a process exit code.

Only what every command needs is imported here; the sync core, the operator endpoint and the migrations are
imported by the commands that run them: `inboxql account add` is the start of a new user's first page (issue
12's clock), and those imports were half of its start-up.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from schema import accounts, tokens
from schema.crypto import CredentialBox
from schema.db import create_database, create_engine, session_factory
from schema.redisconn import connect
from schema.settings import Settings
from schema.shards import HOME, ShardError, Shards, prepare_ids, shard_of
from synccore.connection import Endpoint, InsecureConnection, open_client
from synccore.imap import AuthenticationFailed, ImapError, MissingCapability

if TYPE_CHECKING:
    from ops.sampler import ProfilerConfig

log = logging.getLogger("inboxql")


async def db_upgrade(settings: Settings) -> int:
    """Create and migrate every shard's database, and start its id counters in its range (schema.shards)."""
    from schema.migrate import upgrade

    sharded = len(settings.shard_urls()) > 1
    for shard, url in settings.shard_urls().items():
        which = f"shard {shard}'s database" if sharded else "the database"
        if await create_database(url):
            log.info("created %s", which)
        # Alembic's env.py runs its own event loop: give it a thread of its own.
        await asyncio.to_thread(upgrade, url)
        engine = create_engine(url, pool_size=1)
        try:
            await prepare_ids(engine, shard)
        except ShardError as exc:
            print(f"inboxql: {exc}", file=sys.stderr)
            return 1
        finally:
            await engine.dispose()
        log.info("%s is at the newest revision", which)
    return 0


async def check_logins(endpoint: Endpoint, smtp: accounts.SmtpSettings | None, *, allow_insecure: bool) -> int | None:
    """Log in to the IMAP server (and the SMTP one, when sending is configured) as a new account will, with its
    password or its access token; None when both took it, else the exit code, after saying why on stderr."""
    where = f"{endpoint.host}:{endpoint.port}"
    token = endpoint.oauth2_token
    try:
        client = await open_client(endpoint, allow_insecure=allow_insecure)
    except InsecureConnection as exc:
        print(f"inboxql: {exc} (or pass --allow-insecure)", file=sys.stderr)
        return 2
    except MissingCapability:
        print(f"inboxql: {where} offers neither OAUTHBEARER nor XOAUTH2; nothing was stored", file=sys.stderr)
        return 1
    except AuthenticationFailed:
        what = "access token" if token is not None else "login"
        print(f"inboxql: the server refused the {what} of {endpoint.username!r}; nothing was stored", file=sys.stderr)
        return 1
    except (ImapError, OSError) as exc:
        print(f"inboxql: cannot reach {where}: {exc}; nothing was stored", file=sys.stderr)
        return 1
    await client.logout()
    if smtp is not None:
        from gateway.logins import check_smtp

        problem = await check_smtp(smtp, endpoint.username, endpoint.password, endpoint.tls_ca_file, oauth2_token=token)
        if problem is not None:
            print(f"inboxql: sending: {problem.message}; nothing was stored", file=sys.stderr)
            return 1
    return None


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
    refused = await check_logins(endpoint, smtp, allow_insecure=allow_insecure)
    if refused is not None:
        return refused
    shards = Shards.of(settings, pool_size=1)
    redis = connect(settings.redis_url)
    try:
        shard = await accounts.place(shards)
        if address is None:
            address = username if "@" in username else f"{username}@{host}"
        imap = accounts.ImapEndpoint(host, port, security, username, tls_ca_file)
        box = CredentialBox(settings.key_ring())
        account_id = await accounts.create(shards.store(shard, redis), box, address, imap, password, smtp, shard=shard)
    except ShardError as exc:
        print(f"inboxql: {exc}; nothing was stored", file=sys.stderr)
        return 1
    finally:
        await redis.aclose()
        await shards.dispose()
    print(account_id)
    report_shard(settings, account_id)
    return 0


def report_shard(settings: Settings, account_id: int) -> None:
    """Where a new account went, on stderr (stdout stays the bare id scripts read), when there is a choice."""
    if len(settings.shard_urls()) > 1:
        print(f"account {account_id} is on shard {shard_of(account_id)}", file=sys.stderr)


async def sync(
    settings: Settings,
    *,
    once: bool,
    accounts: Sequence[int] | None,
    poll: float,
    profiler: ProfilerConfig | None = None,
    metrics_port: int | None = None,
    group: str | None = None,
    notify: bool = False,
) -> int:
    """Follow the accounts, or (once) sync them until caught up with their progress on stdout (inboxql.progress).

    The process is watched for blocking calls (ops.watchdog) and sampled (ops.sampler); given a port (or
    INBOXQL_METRICS_PORT), it serves its metrics and the sampler's flame graphs on 127.0.0.1 (ops.server)."""
    from ops.profile import profile_routes
    from ops.sampler import ProfilerConfig, sampling
    from ops.server import EndpointError, operator_endpoint, port_from_env
    from ops.watchdog import watching
    from synccore.account import Tuning
    from synccore.supervisor import Supervisor

    try:
        port = metrics_port if metrics_port is not None else port_from_env()
        with sampling(profiler or ProfilerConfig.from_env()) as sampler:
            async with watching(), operator_endpoint(port, profile_routes(sampler)):
                supervisor = Supervisor(settings, Tuning(poll_interval=poll, notify=notify), group)
                try:
                    if once:
                        from inboxql import progress

                        watcher = create_engine(settings.database_url, pool_size=1)
                        try:
                            async with progress.shown(watcher, accounts):
                                return await supervisor.run_once(accounts)
                        finally:
                            await watcher.dispose()
                    await supervisor.run_forever(accounts)
                    return 0
                finally:
                    await supervisor.close()
    except EndpointError as exc:
        print(f"inboxql: {exc}", file=sys.stderr)
        return 2


async def status(settings: Settings, *, folders: bool) -> int:
    """The accounts table (inboxql.status): a rich table on a terminal, tab-separated lines when piped."""
    from inboxql import status as view
    from schema import status as read

    shards = Shards.of(settings, pool_size=1)
    try:
        found = await read.snapshot_shards(dict(shards.engines()))
    finally:
        await shards.dispose()
    view.render(found.snapshot, sys.stdout, folders=folders)
    for number in found.unavailable:
        print(f"inboxql: shard {number} is unreachable: its accounts are not shown", file=sys.stderr)
    return 1 if found.unavailable else 0


async def verify(settings: Settings, account_id: int) -> int:
    """Differences go to standard output, one a line, then their count; exit 0 only when identical."""
    from synccore.verify import verify as verify_account

    shards = Shards.of(settings, pool_size=2)
    try:
        diffs = await verify_account(shards.store_of(account_id), CredentialBox(settings.key_ring()), account_id)
    except (LookupError, ShardError) as exc:
        print(f"inboxql: {exc}", file=sys.stderr)
        return 2
    finally:
        await shards.dispose()
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
    settings: Settings,
    account_ids: Sequence[int],
    *,
    admin: bool = False,
    read_only: bool = False,
    operator: bool = False,
    name: str | None = None,
) -> str:
    """A new token for these accounts (admin: it may also manage their webhooks; read_only: no mutation), or an
    operator token (no accounts: it manages accounts); its plaintext, shown once.

    Raises schema.tokens.UnknownAccounts when an account does not exist, BadToken for scopes that do not go
    together.
    """
    shards = Shards.of(settings, pool_size=1)
    try:
        found = await accounts.existing(shards, account_ids) if len(shards.numbers) > 1 else None
        async with session_factory(shards.home)() as session, session.begin():
            return await tokens.create_token(
                session, account_ids, admin=admin, read_only=read_only, operator=operator, name=name, found=found
            )
    finally:
        await shards.dispose()


async def token_create(
    settings: Settings,
    account_ids: Sequence[int],
    *,
    admin: bool = False,
    read_only: bool = False,
    operator: bool = False,
    name: str | None = None,
) -> int:
    try:
        token = await new_token(settings, account_ids, admin=admin, read_only=read_only, operator=operator, name=name)
    except (tokens.UnknownAccounts, tokens.BadToken, ShardError) as exc:
        print(f"inboxql: {exc}; no token was created", file=sys.stderr)
        return 1
    print(token)
    return 0


def _when(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment is not None else "never"


async def token_list(settings: Settings, *, revoked: bool) -> int:
    """One line a token: id, name, hint (its first characters, never the secret), scopes, accounts, created,
    last used (and revoked, with --all)."""
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        async with session_factory(engine)() as session:
            found = await tokens.listing(session, revoked=revoked)
    finally:
        await engine.dispose()
    for t in found:
        granted = "accounts " + ",".join(map(str, t.account_ids)) if t.account_ids else "no accounts"
        fields = [str(t.id), t.name or "-", f"{t.hint}...", "+".join(t.scopes), granted]
        fields += [f"created {_when(t.created_at)}", f"last used {_when(t.last_used_at)}"]
        if t.revoked_at is not None:
            fields.append(f"revoked {_when(t.revoked_at)}")
        print("\t".join(fields))
    return 0


async def token_revoke(settings: Settings, token_ids: Sequence[int]) -> int:
    """Revoke tokens by id (from `token list`); exit 1 when one of them was not live."""
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        async with session_factory(engine)() as session, session.begin():
            revoked = await tokens.revoke_ids(session, sorted(set(token_ids)))
    finally:
        await engine.dispose()
    for token_id in revoked:
        print(f"revoked token {token_id}")
    missing = sorted(set(token_ids) - set(revoked))
    if missing:
        print(f"inboxql: no live token {', '.join(map(str, missing))}", file=sys.stderr)
        return 1
    return 0


async def account_list(settings: Settings) -> int:
    """One line an account: id, address, login, server, sync state, last error (every shard's, by id)."""
    shards = Shards.of(settings, pool_size=1)
    found = []
    try:
        for _, engine in shards.engines():
            async with session_factory(engine)() as session:
                found += await accounts.listing(session)
    finally:
        await shards.dispose()
    for a in found:
        error = " ".join((a.sync_error or "-").split())
        print("\t".join([str(a.id), a.address, a.imap.username, a.server, a.sync_state, error]))
    return 0


async def account_set_password(
    settings: Settings, account_id: int, password: str, smtp_password: str | None = None
) -> int:
    """Check the new password against the account's server, then store it (clearing `auth_failed`). The SMTP
    login is checked too when sending uses this password (or the new SMTP one given)."""
    from gateway.logins import check_credentials

    shards = Shards.of(settings, pool_size=1)
    try:
        engine = shards.engine_of(account_id)
    except ShardError as exc:
        print(f"inboxql: {exc}", file=sys.stderr)
        await shards.dispose()
        return 2
    try:
        async with session_factory(engine)() as session:
            found = await accounts.info(session, account_id)
        if found is None or found.sync_state == accounts.REMOVING:
            print(f"inboxql: account {account_id} does not exist", file=sys.stderr)
            return 2
        problem = await check_credentials(found, password, smtp_password)
        if problem is not None:
            print(f"inboxql: {problem.message}; nothing was changed", file=sys.stderr)
            return 1
        store = shards.store_of(account_id, connect(settings.redis_url))
        try:
            changed = await accounts.set_password(
                store, CredentialBox(settings.key_ring()), account_id, password, smtp_password
            )
        finally:
            if store.redis is not None:
                await store.redis.aclose()
    finally:
        await shards.dispose()
    if not changed:
        print(f"inboxql: account {account_id} does not exist", file=sys.stderr)
        return 2
    print(f"account {account_id}: new credentials stored; it syncs again")
    return 0


async def account_remove(settings: Settings, account_id: int, *, wait_seconds: float = 30.0) -> int:
    shards = Shards.of(settings, pool_size=2)
    try:
        store = shards.store_of(account_id)
        home = shards.store(HOME) if shard_of(account_id) != HOME else None
        removed = await accounts.remove(store, account_id, wait_seconds=wait_seconds, home=home)
    except ShardError as exc:
        print(f"inboxql: {exc}", file=sys.stderr)
        return 2
    finally:
        await shards.dispose()
    if removed is None:
        print(f"inboxql: account {account_id} does not exist", file=sys.stderr)
        return 2
    if not removed.let_go:
        print(
            f"inboxql: the sync process holding account {account_id} did not let go within {wait_seconds:.0f} s; "
            "removed all the same",
            file=sys.stderr,
        )
    revoked = ", ".join(map(str, removed.revoked_tokens)) or "none"
    print(f"account {account_id} removed; tokens revoked: {revoked}")
    return 0


NO_RING = (
    "the secret key comes from INBOXQL_SECRET_KEY, which cannot hold a second key: to rotate, write it to a file "
    "(its one line is read as key 1), point INBOXQL_SECRET_KEY_FILE at it, unset INBOXQL_SECRET_KEY in every "
    "process, and run this again"
)


async def secret_rotate(settings: Settings) -> int:
    """Add a new key to the ring and re-seal every stored credential with it; the old keys still open, so
    running processes keep working (they read the ring again when they meet the new key)."""
    if settings.secret_key_file is None:
        print(f"inboxql: {NO_RING}", file=sys.stderr)
        return 2
    from schema import keyring, sealed

    keys = keyring.add_key(Path(settings.secret_key_file))
    box = CredentialBox(settings.key_ring())
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        done = await sealed.reseal(engine, box)
    finally:
        await engine.dispose()
    newest = box.ring.newest.id
    older = ", ".join(str(k.id) for k in sorted(keys, key=lambda k: k.id) if k.id != newest)
    print(
        f"key {newest} seals from now on; {done.resealed} credentials re-sealed with it "
        f"({done.current} were already, {done.changed_meanwhile} changed meanwhile); keys {older} still open "
        "older ones: `inboxql secret prune` drops them once every process runs with the new ring"
    )
    return 0


async def secret_prune(settings: Settings) -> int:
    """Drop every key but the newest from the ring, once nothing stored is sealed with them (re-sealing first)."""
    if settings.secret_key_file is None:
        print(f"inboxql: {NO_RING}", file=sys.stderr)
        return 2
    from schema import keyring, sealed

    box = CredentialBox(settings.key_ring())
    newest = box.ring.newest.id
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        await sealed.reseal(engine, box)
        in_use = await sealed.key_ids_in_use(engine, box)
    finally:
        await engine.dispose()
    stale = {key_id: n for key_id, n in in_use.items() if key_id != newest}
    if stale:
        print(f"inboxql: credentials still sealed with older keys ({stale}); nothing was dropped", file=sys.stderr)
        return 1
    keyring.keep_only(Path(settings.secret_key_file), newest)
    print(f"the key ring holds key {newest} only")
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
