"""API tokens of the gateway: a token grants read access to a set of accounts, and may carry the admin scope
or be read-only.

Scopes: every token reads (and, through mutations, acts on) the mail of the accounts it grants. An *admin* token
may also manage those accounts' webhooks (create, delete, re-enable, list them and read their delivery log).
Admin widens what a token may do, never which accounts it reaches: there is no "all accounts" token. A
*read-only* token narrows it: it reads, and every mutation is refused (webhook ones included).

Only the SHA-256 of a token is stored; the plaintext is shown once, when the token is created. Tokens carry
a recognisable prefix (``iqt_``) so secret scanners can find a leaked one, and 256 random bits, so a fast
unsalted hash is enough (nothing to brute-force, unlike a password).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from schema.models import Account, ApiToken, ApiTokenAccount, utcnow

PREFIX = "iqt_"


@dataclass(frozen=True, slots=True)
class Grant:
    """What a valid token may see (its accounts), whether it holds the admin scope, and whether it may only read."""

    token_id: int
    account_ids: frozenset[int]
    admin: bool = False
    read_only: bool = False


class UnknownAccounts(ValueError):
    """A token was asked for accounts that do not exist."""


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def create_token(
    session: AsyncSession, account_ids: Iterable[int], *, admin: bool = False, read_only: bool = False
) -> str:
    """Create a token for these accounts (with the admin scope, or read-only, if asked) and return its plaintext
    (the only time it exists)."""
    wanted = sorted(set(account_ids))
    if not wanted:
        raise UnknownAccounts("a token needs at least one account")
    found = set(await session.scalars(select(Account.id).where(Account.id.in_(wanted))))
    missing = [a for a in wanted if a not in found]
    if missing:
        raise UnknownAccounts(f"no such account: {', '.join(map(str, missing))}")
    token = PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(token_hash=token_hash(token), hint=token[:10], admin=admin, read_only=read_only)
    session.add(row)
    await session.flush()
    session.add_all(ApiTokenAccount(token_id=row.id, account_id=a) for a in wanted)
    await session.flush()
    return token


async def lookup(session: AsyncSession, token: str) -> Grant | None:
    """The grant of a live token; None for an unknown, malformed or revoked one."""
    if not token.startswith(PREFIX) or len(token) > 128:
        return None
    row = (
        await session.execute(
            select(ApiToken.id, ApiToken.revoked_at, ApiToken.admin, ApiToken.read_only).where(
                ApiToken.token_hash == token_hash(token)
            )
        )
    ).first()
    if row is None or row.revoked_at is not None:
        return None
    accounts = await session.scalars(select(ApiTokenAccount.account_id).where(ApiTokenAccount.token_id == row.id))
    return Grant(token_id=row.id, account_ids=frozenset(accounts), admin=bool(row.admin), read_only=bool(row.read_only))


async def lookup_id(session: AsyncSession, token_id: int) -> Grant | None:
    """The grant of a live token by its id (signed download links name the token by id)."""
    row = (
        await session.execute(
            select(ApiToken.revoked_at, ApiToken.admin, ApiToken.read_only).where(ApiToken.id == token_id)
        )
    ).first()
    if row is None or row.revoked_at is not None:
        return None
    accounts = await session.scalars(select(ApiTokenAccount.account_id).where(ApiTokenAccount.token_id == token_id))
    return Grant(
        token_id=token_id, account_ids=frozenset(accounts), admin=bool(row.admin), read_only=bool(row.read_only)
    )


async def accounts_for_token(session: AsyncSession, token: str) -> set[int] | None:
    grant = await lookup(session, token)
    return None if grant is None else set(grant.account_ids)


async def touch(session: AsyncSession, token_id: int) -> None:
    await session.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=utcnow()))


async def revoke(session: AsyncSession, token: str) -> bool:
    result = await session.execute(
        update(ApiToken)
        .where(ApiToken.token_hash == token_hash(token), ApiToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return bool(getattr(result, "rowcount", 0))


__all__ = [
    "PREFIX",
    "ApiToken",
    "ApiTokenAccount",
    "Grant",
    "UnknownAccounts",
    "accounts_for_token",
    "create_token",
    "lookup",
    "lookup_id",
    "revoke",
    "token_hash",
    "touch",
]
