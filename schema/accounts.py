"""Accounts: creation with sealed credentials, and the sync state a client can see."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update

from schema.changelog import ObjectType, Op
from schema.crypto import CredentialBox
from schema.models import Account
from schema.unit import Store, UnitOfWork


@dataclass(frozen=True, slots=True)
class ImapEndpoint:
    host: str
    port: int
    security: str  # "tls", "starttls" or "none"
    username: str
    tls_ca_file: str | None = None


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
    password: str,
    smtp: SmtpSettings | None = None,
) -> int:
    async with store.unit(0) as uow:
        account = Account(
            address=address,
            imap_host=imap.host,
            imap_port=imap.port,
            imap_security=imap.security,
            imap_username=imap.username,
            imap_password=box.seal(password),
            tls_ca_file=imap.tls_ca_file,
            sync_state="pending",
            smtp_host=smtp.host if smtp else None,
            smtp_port=smtp.port if smtp else None,
            smtp_security=smtp.security if smtp else None,
            smtp_username=smtp.username if smtp else None,
        )
        uow.session.add(account)
        await uow.session.flush()
        uow.account_id = account.id
        uow.record(ObjectType.ACCOUNT, Op.CREATE, [account.id])
    return account.id


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
    before = await uow.session.scalar(select(Account.sync_state).where(Account.id == uow.account_id))
    await uow.session.execute(
        update(Account).where(Account.id == uow.account_id).values(sync_state=state, sync_error=error)
    )
    if before != state:
        uow.record(ObjectType.ACCOUNT, Op.UPDATE, [uow.account_id])


async def refuse_credentials(uow: UnitOfWork, tried: bytes, error: str) -> bool:
    """The server refused the sealed credentials `tried`: mark the account `auth_failed`, unless they were replaced
    meanwhile (set_password), which a login started before must not undo. Returns whether it was marked."""
    stored = await uow.session.scalar(
        select(Account.imap_password).where(Account.id == uow.account_id).with_for_update()
    )
    if stored != tried:
        return False
    await set_state(uow, "auth_failed", error)
    return True


async def set_password(store: Store, box: CredentialBox, account_id: int, password: str) -> None:
    """New credentials clear an authentication failure: the sync core tries again (the supervisor restarts the
    account within a rescan; a login refused meanwhile does not mark the new ones, see refuse_credentials)."""
    async with store.unit(account_id) as uow:
        await uow.session.execute(
            update(Account).where(Account.id == account_id).values(imap_password=box.seal(password))
        )
        await set_state(uow, "pending")
