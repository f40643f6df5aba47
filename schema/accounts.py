"""Accounts: creation with sealed credentials, the sync state a client can see, new credentials, and removal.

Removal (`remove`) goes in steps, each its own transaction, so a large mirror never holds one huge transaction
and an interrupted removal is finished by running it again:

    mark REMOVING (the sync process lets go: synccore.supervisor), revoke the tokens that grant it, drop its
    webhooks, queued actions and outbox -> wait (bounded) for the lease holder to let go -> delete the mirror in
    batches (places, messages and their unshared blobs, threads, folders, labels, uploads, change log) -> the row
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from schema import tokens
from schema.changelog import ObjectType, Op
from schema.crypto import CredentialBox, Purpose
from schema.models import (
    Account,
    Action,
    ApiTokenAccount,
    ChangeLog,
    ChangeSeq,
    Folder,
    Label,
    Message,
    MessagePlace,
    MutationKey,
    Outbox,
    Thread,
    ThreadRef,
    Upload,
    Webhook,
    utcnow,
)
from schema.shards import HOME, ShardError, Shards, shard_of
from schema.unit import Store, UnitOfWork

log = logging.getLogger(__name__)

# The sync state of an account being removed: the sync process lets go of it and never takes it again.
REMOVING = "removing"
AUTH_FAILED = "auth_failed"
# An OAuth2 account whose grant the provider refused (a revoked or expired refresh token), or whose fresh access
# token the server still refused: the sync stops until the user consents again (the gateway's consent flow).
NEEDS_CONSENT = "needs_consent"
# The states in which the sync process leaves an account alone.
STOPPED = frozenset({AUTH_FAILED, NEEDS_CONSENT, REMOVING})
BATCH = 2000
# What the driver raises while a server is unreachable.
UNREACHABLE = (OperationalError, InterfaceError, OSError)


@dataclass(frozen=True, slots=True)
class ImapEndpoint:
    host: str
    port: int
    security: str  # "tls", "starttls" or "none"
    username: str
    tls_ca_file: str | None = None


@dataclass(frozen=True, slots=True)
class OAuth2Grant:
    """What an OAuth2 account logs in with: its provider's name (oauth.provider) and a refresh token, with the
    access token already granted (cached sealed, so the first login asks the provider nothing)."""

    provider: str
    refresh_token: str = field(repr=False)
    access_token: str | None = field(default=None, repr=False)
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """Where the account submits mail; username and password default to the IMAP login's."""

    host: str
    port: int
    security: str  # "starttls", "tls" or "plain"
    username: str | None = None


async def create(
    store: Store,
    box: CredentialBox,
    address: str,
    imap: ImapEndpoint,
    password: str | None,
    smtp: SmtpSettings | None = None,
    smtp_password: str | None = None,
    oauth2: OAuth2Grant | None = None,
    shard: int = HOME,
) -> int:
    """A new account (sync state pending); `smtp_password` when sending logs in with a password of its own. An
    OAuth2 account (`oauth2`) has no password: IMAP and SMTP log in with its access tokens.

    `store` writes to shard `shard` (schema.shards): an id that does not decode to it (a shard whose counters
    `inboxql db upgrade` has not prepared) is refused with ShardError and nothing is stored."""
    if (password is None) == (oauth2 is None):
        raise ValueError("an account logs in with a password or with an OAuth2 grant, not both")
    async with store.unit(0) as uow:
        account = Account(
            address=address,
            imap_host=imap.host,
            imap_port=imap.port,
            imap_security=imap.security,
            imap_username=imap.username,
            imap_password=box.seal(password, Purpose.ACCOUNT) if password is not None else None,
            **(_grant_values(box, oauth2) if oauth2 is not None else {}),
            tls_ca_file=imap.tls_ca_file,
            sync_state="pending",
            smtp_host=smtp.host if smtp else None,
            smtp_port=smtp.port if smtp else None,
            smtp_security=smtp.security if smtp else None,
            smtp_username=smtp.username if smtp else None,
            smtp_password=box.seal(smtp_password, Purpose.ACCOUNT) if smtp and smtp_password is not None else None,
        )
        uow.session.add(account)
        await uow.session.flush()
        if shard_of(account.id) != shard:
            raise ShardError(
                f"shard {shard} numbered a new account {account.id}, an id of shard {shard_of(account.id)}: "
                "run `inboxql db upgrade` to prepare every shard"
            )
        uow.account_id = account.id
        uow.record(ObjectType.ACCOUNT, Op.CREATE, [account.id])
    await _ring_sync_processes(store)
    return account.id


def _engines(shards: Shards | Mapping[int, AsyncEngine]) -> Mapping[int, AsyncEngine]:
    return dict(shards.engines()) if isinstance(shards, Shards) else shards


async def counts(shards: Shards | Mapping[int, AsyncEngine]) -> dict[int, int]:
    """The accounts of each reachable shard (those being removed are not counted); an unreachable shard is left
    out, with a warning. `shards`: the Shards, or their engines by number (the gateway's)."""
    found: dict[int, int] = {}
    for number, engine in sorted(_engines(shards).items()):
        try:
            async with engine.connect() as conn:
                count = await conn.scalar(
                    select(func.count()).select_from(Account).where(Account.sync_state != REMOVING)
                )
        except UNREACHABLE as exc:
            log.warning("shard %s is unreachable; no account is placed there: %s", number, str(exc).splitlines()[0])
            continue
        found[number] = int(count or 0)
    return found


async def place(shards: Shards | Mapping[int, AsyncEngine]) -> int:
    """The shard a new account goes to: the least loaded by number of accounts (what a shard's write load and
    size grow with, and one cheap query each), the lowest number on a tie. A single shard is shard 0, asked
    nothing. ShardError when no shard is reachable."""
    if len(_engines(shards)) == 1:
        return HOME
    found = await counts(shards)
    if not found:
        raise ShardError("no shard is reachable: the account cannot be placed")
    return min(found, key=lambda n: (found[n], n))


async def existing(shards: Shards, account_ids: Iterable[int]) -> set[int]:
    """Which of these accounts exist, each looked for on its shard (one query per shard named); an id of a shard
    not configured does not exist. ShardError when a shard named cannot be reached."""
    by_shard: dict[int, list[int]] = {}
    for account_id in set(account_ids):
        if shard_of(account_id) in shards.urls:
            by_shard.setdefault(shard_of(account_id), []).append(account_id)
    found: set[int] = set()
    for shard, ids in sorted(by_shard.items()):
        try:
            async with shards.engine(shard).connect() as conn:
                found.update(await conn.scalars(select(Account.id).where(Account.id.in_(ids))))
        except UNREACHABLE as exc:
            raise ShardError(f"shard {shard} is unreachable: its accounts cannot be checked") from exc
    return found


async def _ring_sync_processes(store: Store) -> None:
    """After a commit that adds, removes or re-credentials an account: the sync processes look at once."""
    if store.redis is not None:
        await store.doorbells.ring_accounts(store.redis)


def _grant_values(box: CredentialBox, grant: OAuth2Grant) -> dict[str, object]:
    return {
        "oauth2_provider": grant.provider,
        "oauth2_refresh_token": box.seal(grant.refresh_token, Purpose.ACCOUNT),
        "oauth2_access_token": box.seal(grant.access_token, Purpose.ACCOUNT) if grant.access_token else None,
        "oauth2_expires_at": grant.expires_at if grant.access_token else None,
    }


async def find_login(session: AsyncSession, host: str, port: int, username: str) -> int | None:
    """The account that logs in as `username` at host:port (the consent flow re-authorizes it), if any."""
    found: int | None = await session.scalar(
        select(Account.id)
        .where(Account.imap_host == host, Account.imap_port == port, Account.imap_username == username)
        .where(Account.sync_state != REMOVING)
        .order_by(Account.id)
        .limit(1)
    )
    return found


async def reauthorize(store: Store, box: CredentialBox, account_id: int, grant: OAuth2Grant) -> bool:
    """A new OAuth2 grant replaces the account's credentials in place (the same account, the same ids) and
    clears `needs_consent` / `auth_failed`: the sync core takes it up again. False when the account does not
    exist or is being removed."""
    async with store.unit(account_id) as uow:
        state = await uow.session.scalar(select(Account.sync_state).where(Account.id == account_id).with_for_update())
        if state is None or state == REMOVING:
            return False
        values = {**_grant_values(box, grant), "imap_password": None, "smtp_password": None}
        await uow.session.execute(update(Account).where(Account.id == account_id).values(**values))
        await set_state(uow, "pending")
    await _ring_sync_processes(store)
    return True


async def cache_tokens(
    store: Store,
    box: CredentialBox,
    account_id: int,
    tried: bytes,
    access_token: str,
    expires_at: datetime,
    refresh_token: str | None,
) -> bytes | None:
    """Keep a refreshed access token (and a rotated refresh token) unless the account's refresh token changed
    since `tried` (its sealed value) was read: a new consent wins over a refresh started before it. Returns the
    sealed refresh token the account holds now (the rotated one, or `tried`); None when it changed meanwhile."""
    async with store.sessions() as s, s.begin():
        stored = await s.scalar(select(Account.oauth2_refresh_token).where(Account.id == account_id).with_for_update())
        if stored != tried:
            return None
        values: dict[str, object] = {
            "oauth2_access_token": box.seal(access_token, Purpose.ACCOUNT),
            "oauth2_expires_at": expires_at,
        }
        holds = tried
        if refresh_token is not None:
            holds = values["oauth2_refresh_token"] = box.seal(refresh_token, Purpose.ACCOUNT)
        # No change-log entry: a cached token is no state a client sees.
        await s.execute(update(Account).where(Account.id == account_id).values(**values))
    return holds


async def refuse_grant(uow: UnitOfWork, tried: bytes, error: str) -> bool:
    """The provider refused the sealed refresh token `tried` (or the server refused even a fresh access token):
    mark the account `needs_consent`, unless a new grant replaced it meanwhile. Returns whether it was marked."""
    stored = await uow.session.scalar(
        select(Account.oauth2_refresh_token).where(Account.id == uow.account_id).with_for_update()
    )
    if stored != tried:
        return False
    await uow.session.execute(
        update(Account).where(Account.id == uow.account_id).values(oauth2_access_token=None, oauth2_expires_at=None)
    )
    await set_state(uow, NEEDS_CONSENT, error)
    return True


async def set_smtp(store: Store, account_id: int, smtp: SmtpSettings, tls_ca_file: str | None) -> None:
    """Point the account's sending at another submission server (same login unless smtp names one)."""
    async with store.unit(account_id) as uow:
        await uow.session.execute(
            update(Account)
            .where(Account.id == account_id)
            .values(
                smtp_host=smtp.host,
                smtp_port=smtp.port,
                smtp_security=smtp.security,
                smtp_username=smtp.username,
                tls_ca_file=tls_ca_file,
            )
        )


async def get_state(uow: UnitOfWork) -> str | None:
    state: str | None = await uow.session.scalar(select(Account.sync_state).where(Account.id == uow.account_id))
    return state


async def set_state(uow: UnitOfWork, state: str, error: str | None = None) -> None:
    """The account's sync state and its error (None clears it); the error's time goes beside it (for the operator
    status page, unlogged: clients' state of an account holds neither). Logged when the state moves."""
    before = await uow.session.scalar(select(Account.sync_state).where(Account.id == uow.account_id))
    await uow.session.execute(
        update(Account)
        .where(Account.id == uow.account_id)
        .values(sync_state=state, sync_error=error, sync_error_at=utcnow() if error is not None else None)
    )
    if before != state:
        uow.record(ObjectType.ACCOUNT, Op.UPDATE, [uow.account_id])


async def refuse_credentials(uow: UnitOfWork, tried: bytes | None, error: str) -> bool:
    """The server refused the sealed credentials `tried`: mark the account `auth_failed`, unless they were replaced
    meanwhile (set_password), which a login started before must not undo. Returns whether it was marked."""
    stored = await uow.session.scalar(
        select(Account.imap_password).where(Account.id == uow.account_id).with_for_update()
    )
    if stored != tried:
        return False
    await set_state(uow, "auth_failed", error)
    return True


async def set_password(
    store: Store, box: CredentialBox, account_id: int, password: str, smtp_password: str | None = None
) -> bool:
    """New credentials (the IMAP password, and the SMTP one when it differs) replace the old in place (the same
    account, the same ids) and clear an authentication failure: the sync core tries again. False when the
    account does not exist or is being removed."""
    async with store.unit(account_id) as uow:
        state = await uow.session.scalar(select(Account.sync_state).where(Account.id == account_id).with_for_update())
        if state is None or state == REMOVING:
            return False
        # A password replaces an OAuth2 grant too: the account logs in with it from now on.
        values: dict[str, bytes | None] = {
            "imap_password": box.seal(password, Purpose.ACCOUNT),
            "oauth2_provider": None,
            "oauth2_refresh_token": None,
            "oauth2_access_token": None,
        }
        if smtp_password is not None:
            values["smtp_password"] = box.seal(smtp_password, Purpose.ACCOUNT)
        await uow.session.execute(update(Account).where(Account.id == account_id).values(**values))
        await set_state(uow, "pending")
    await _ring_sync_processes(store)
    return True


async def identity_mode(store: Store, account_id: int) -> str | None:
    """The identity mode the account's messages are known by (synccore.identity), None before its first sync."""
    async with store.sessions() as s:
        found: str | None = await s.scalar(select(Account.identity_mode).where(Account.id == account_id))
    return found


async def settle_identity_mode(store: Store, account_id: int, mode: str) -> str:
    """Record the account's identity mode unless one is recorded already; returns the one that holds (two
    connections of one account detecting at once agree on the first)."""
    async with store.unit(account_id) as uow:
        await uow.session.execute(
            update(Account).where(Account.id == account_id, Account.identity_mode.is_(None)).values(identity_mode=mode)
        )
        found = await uow.session.scalar(select(Account.identity_mode).where(Account.id == account_id))
    return found or mode


async def replace_identity_mode(uow: UnitOfWork, mode: str) -> None:
    """A new identity mode, with the messages re-keyed in the same unit (schema.messages.rekey_by_content)."""
    await uow.session.execute(update(Account).where(Account.id == uow.account_id).values(identity_mode=mode))


@dataclass(frozen=True, slots=True)
class AccountInfo:
    """What an operator sees of an account: never its credentials."""

    id: int
    address: str
    imap: ImapEndpoint
    smtp: SmtpSettings | None
    sync_state: str
    sync_error: str | None
    lease_owner: str | None
    created_at: datetime
    # Sending logs in with a password of its own (else with the IMAP one).
    own_smtp_password: bool = False
    # The OAuth2 provider the account logs in through (None: a password).
    oauth2_provider: str | None = None

    @property
    def server(self) -> str:
        return f"{self.imap.host}:{self.imap.port} ({self.imap.security})"


def _info(row: Account) -> AccountInfo:
    smtp = None
    if row.smtp_host is not None and row.smtp_port is not None:
        smtp = SmtpSettings(row.smtp_host, row.smtp_port, row.smtp_security or "starttls", row.smtp_username)
    return AccountInfo(
        id=row.id,
        address=row.address,
        imap=ImapEndpoint(row.imap_host, row.imap_port, row.imap_security, row.imap_username, row.tls_ca_file),
        smtp=smtp,
        sync_state=row.sync_state,
        sync_error=row.sync_error,
        lease_owner=row.lease_owner,
        created_at=row.created_at,
        own_smtp_password=row.smtp_password is not None,
        oauth2_provider=row.oauth2_provider,
    )


async def listing(session: AsyncSession, after: int = 0, limit: int | None = None) -> list[AccountInfo]:
    """Accounts by id (those after `after`, at most `limit`)."""
    query = select(Account).where(Account.id > after).order_by(Account.id)
    if limit is not None:
        query = query.limit(limit)
    return [_info(row) for row in await session.scalars(query)]


async def info(session: AsyncSession, account_id: int) -> AccountInfo | None:
    row = await session.get(Account, account_id)
    return None if row is None else _info(row)


@dataclass(frozen=True, slots=True)
class Removed:
    """What a removal did: the tokens it revoked, and whether the sync process let go in time."""

    account_id: int
    revoked_tokens: list[int]
    let_go: bool


async def remove(
    store: Store, account_id: int, *, wait_seconds: float = 30.0, home: Store | None = None
) -> Removed | None:
    """Remove an account: its mirror, change log, webhooks, queued actions and outbox are deleted and the tokens
    that grant it are revoked. None when it does not exist. Waits up to `wait_seconds` for the sync process that
    holds its lease to let go (it does within its rescan period), then deletes either way: a sync write that
    lands after the row is gone fails on its foreign key and is dropped.

    `store` is the account's shard; `home` is shard 0, where tokens and their grants live (schema.shards), when
    that is another database: the tokens are then revoked there in a transaction of their own."""
    async with store.sessions() as s, s.begin():
        found = await s.scalar(select(Account.id).where(Account.id == account_id).with_for_update())
        if found is None:
            return None
        await s.execute(
            update(Account)
            .where(Account.id == account_id)
            .values(sync_state=REMOVING, sync_error=None, sync_error_at=None)
        )
        revoked = await _revoke_grants(s, account_id) if home is None else []
        # What would reach the outside world after removal goes first: hooks, queued write-backs, queued sends.
        for table in (Webhook, Action, Outbox):
            await s.execute(delete(table).where(table.account_id == account_id))
    if home is not None:
        async with home.sessions() as s, s.begin():
            granting = await tokens.granting(s, account_id)
            revoked = await _revoke_grants(s, account_id)
        if granting:  # the keys its mutations kept, on its own shard
            async with store.sessions() as s, s.begin():
                await s.execute(delete(MutationKey).where(MutationKey.token_id.in_(granting)))
    await _ring_sync_processes(store)
    let_go = await _wait_for_release(store, account_id, wait_seconds)
    await _delete_mirror(store, account_id)
    # The grants go with the account (they name it across databases: no foreign key holds them to it).
    async with (home or store).sessions() as s, s.begin():
        await s.execute(delete(ApiTokenAccount).where(ApiTokenAccount.account_id == account_id))
    return Removed(account_id, revoked, let_go)


async def _revoke_grants(s: AsyncSession, account_id: int) -> list[int]:
    """Every token that grants the account is revoked, one of several accounts too (a grant that shrank under its
    holder would be a surprise; a revoked token is a clear error), and the replies its idempotency keys kept
    (they hold the account's data) go. The ids of the tokens that were live."""
    granting = await tokens.granting(s, account_id)
    revoked = await tokens.revoke_ids(s, granting)
    if granting:
        await s.execute(delete(MutationKey).where(MutationKey.token_id.in_(granting)))
    return revoked


async def _wait_for_release(store: Store, account_id: int, wait_seconds: float) -> bool:
    deadline = asyncio.get_running_loop().time() + wait_seconds
    while True:
        async with store.sessions() as s:
            row = (
                await s.execute(select(Account.lease_owner, Account.lease_expires_at).where(Account.id == account_id))
            ).first()
        if (
            row is None
            or row.lease_owner is None
            or (row.lease_expires_at is not None and row.lease_expires_at < utcnow())
        ):
            return True
        if asyncio.get_running_loop().time() >= deadline:
            return False
        await asyncio.sleep(0.5)


async def _delete_mirror(store: Store, account_id: int) -> None:
    # The message store's module (and the MIME package under it) only here: `inboxql account add` imports this
    # module, and its start-up is the first part of a new user's wait for the inbox.
    from schema.messages import drop_unused_blobs

    # Messages first (places, labels and attachments go with them), with the blobs no other message holds.
    while True:
        async with store.sessions() as s, s.begin():
            rows = list(
                await s.execute(
                    select(Message.id, Message.blob_sha256).where(Message.account_id == account_id).limit(BATCH)
                )
            )
            if not rows:
                break
            ids = [r.id for r in rows]
            await s.execute(delete(MessagePlace).where(MessagePlace.message_id.in_(ids)))
            await s.execute(delete(Message).where(Message.id.in_(ids)))
            await drop_unused_blobs(s, [r.blob_sha256 for r in rows])
    await _delete_by_key(store, Thread.id, Thread.account_id, account_id)
    for key, owner in (
        (Folder.id, Folder.account_id),
        (Label.id, Label.account_id),
        (Upload.id, Upload.account_id),
    ):
        await _delete_by_key(store, key, owner, account_id)
    async with store.sessions() as s, s.begin():
        await s.execute(delete(ThreadRef).where(ThreadRef.account_id == account_id))
    while True:
        async with store.sessions() as s, s.begin():
            seqs = list(await s.scalars(select(ChangeLog.seq).where(ChangeLog.account_id == account_id).limit(BATCH)))
            if not seqs:
                break
            await s.execute(delete(ChangeLog).where(ChangeLog.account_id == account_id, ChangeLog.seq.in_(seqs)))
    async with store.sessions() as s, s.begin():
        # Whatever a sync write added meanwhile goes with the row (the foreign keys cascade).
        await s.execute(delete(Message).where(Message.account_id == account_id))
        await s.execute(delete(Thread).where(Thread.account_id == account_id))
        await s.execute(delete(ChangeLog).where(ChangeLog.account_id == account_id))
        await s.execute(delete(ChangeSeq).where(ChangeSeq.account_id == account_id))
        await s.execute(delete(Account).where(Account.id == account_id))


async def _delete_by_key(
    store: Store, key: InstrumentedAttribute[int], owner: InstrumentedAttribute[int], account_id: int
) -> None:
    while True:
        async with store.sessions() as s, s.begin():
            ids: Sequence[int] = list(await s.scalars(select(key).where(owner == account_id).limit(BATCH)))
            if not ids:
                return
            await s.execute(delete(key.class_).where(key.in_(ids)))
