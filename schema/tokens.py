"""API tokens of the gateway: a token grants read access to a set of accounts, and may carry the admin scope
or be read-only.

Scopes: every token reads (and, through mutations, acts on) the mail of the accounts it grants. An *admin* token
may also manage those accounts' webhooks (create, delete, re-enable, list them and read their delivery log).
Admin widens what a token may do, never which accounts it reaches: there is no "all accounts" token. A
*read-only* token narrows it: it reads, and every mutation is refused (webhook ones included).

An *operator* token is of another kind: it grants no account's mail, and manages accounts instead (add one with
its login checked, list them with their sync state, set new credentials, remove one), so a product can onboard
its users without a shell. It is created alone (`inboxql token create --operator`), never together with accounts,
so no token both reads mail and manages every account.

Only the SHA-256 of a token is stored; the plaintext is shown once, when the token is created. Tokens carry
a recognisable prefix (``iqt_``) so secret scanners can find a leaked one, and 256 random bits, so a fast
unsalted hash is enough (nothing to brute-force, unlike a password).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

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
    operator: bool = False


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What `inboxql token list` shows of a token: never its secret (only its first characters, the hint)."""

    id: int
    name: str | None
    hint: str
    scopes: tuple[str, ...]
    account_ids: tuple[int, ...]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


MAX_NAME = 64


class UnknownAccounts(ValueError):
    """A token was asked for accounts that do not exist."""


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class BadToken(ValueError):
    """A token was asked for with scopes that do not go together, or a name that cannot be stored."""


async def create_token(
    session: AsyncSession,
    account_ids: Iterable[int],
    *,
    admin: bool = False,
    read_only: bool = False,
    operator: bool = False,
    name: str | None = None,
    found: Collection[int] | None = None,
) -> str:
    """Create a token for these accounts (with the admin scope, or read-only, if asked), or an operator token (no
    accounts), and return its plaintext (the only time it exists).

    `found`: the accounts known to exist, when the caller looked for them on their shards (the session is shard
    0's, where tokens live; schema.shards); None looks for them in the session's database."""
    wanted = sorted(set(account_ids))
    if name is not None and (len(name) > MAX_NAME or not name.isprintable()):
        raise BadToken(f"a token's name is at most {MAX_NAME} printable characters")
    if operator:
        if wanted or admin or read_only:
            raise BadToken("an operator token grants no accounts and takes no other scope")
        token = PREFIX + secrets.token_urlsafe(32)
        session.add(ApiToken(token_hash=token_hash(token), hint=token[:10], operator=True, name=name))
        await session.flush()
        return token
    if not wanted:
        raise UnknownAccounts("a token needs at least one account")
    if found is None:
        found = set(await session.scalars(select(Account.id).where(Account.id.in_(wanted))))
    missing = [a for a in wanted if a not in found]
    if missing:
        raise UnknownAccounts(f"no such account: {', '.join(map(str, missing))}")
    token = PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(token_hash=token_hash(token), hint=token[:10], admin=admin, read_only=read_only, name=name)
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
            select(ApiToken.id, ApiToken.revoked_at, ApiToken.admin, ApiToken.read_only, ApiToken.operator).where(
                ApiToken.token_hash == token_hash(token)
            )
        )
    ).first()
    if row is None or row.revoked_at is not None:
        return None
    accounts = await session.scalars(select(ApiTokenAccount.account_id).where(ApiTokenAccount.token_id == row.id))
    return Grant(
        token_id=row.id,
        account_ids=frozenset(accounts),
        admin=bool(row.admin),
        read_only=bool(row.read_only),
        operator=bool(row.operator),
    )


async def lookup_id(session: AsyncSession, token_id: int) -> Grant | None:
    """The grant of a live token by its id (signed download links name the token by id)."""
    row = (
        await session.execute(
            select(ApiToken.revoked_at, ApiToken.admin, ApiToken.read_only, ApiToken.operator).where(
                ApiToken.id == token_id
            )
        )
    ).first()
    if row is None or row.revoked_at is not None:
        return None
    accounts = await session.scalars(select(ApiTokenAccount.account_id).where(ApiTokenAccount.token_id == token_id))
    return Grant(
        token_id=token_id,
        account_ids=frozenset(accounts),
        admin=bool(row.admin),
        read_only=bool(row.read_only),
        operator=bool(row.operator),
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


async def revoke_ids(session: AsyncSession, token_ids: Sequence[int]) -> list[int]:
    """Revoke these tokens; returns the ids that were live (an unknown or already revoked id is left out)."""
    if not token_ids:
        return []
    live = list(
        await session.scalars(
            select(ApiToken.id).where(ApiToken.id.in_(token_ids), ApiToken.revoked_at.is_(None)).with_for_update()
        )
    )
    if live:
        await session.execute(update(ApiToken).where(ApiToken.id.in_(live)).values(revoked_at=utcnow()))
    return sorted(live)


async def granting(session: AsyncSession, account_id: int) -> list[int]:
    """The ids of every token (live or revoked) that grants this account."""
    return sorted(
        await session.scalars(select(ApiTokenAccount.token_id).where(ApiTokenAccount.account_id == account_id))
    )


def _scopes(row: ApiToken) -> tuple[str, ...]:
    if row.operator:
        return ("operator",)
    scopes = ["read"] if row.read_only else ["read", "write"]
    if row.admin:
        scopes.append("admin")
    return tuple(scopes)


async def listing(session: AsyncSession, *, revoked: bool = False) -> list[TokenInfo]:
    """Every live token (and the revoked ones too with `revoked`), oldest first."""
    query = select(ApiToken).order_by(ApiToken.id)
    if not revoked:
        query = query.where(ApiToken.revoked_at.is_(None))
    rows = list(await session.scalars(query))
    grants: dict[int, list[int]] = {}
    if rows:
        pairs = await session.execute(
            select(ApiTokenAccount.token_id, ApiTokenAccount.account_id)
            .where(ApiTokenAccount.token_id.in_([r.id for r in rows]))
            .order_by(ApiTokenAccount.account_id)
        )
        for token_id, account_id in pairs:
            grants.setdefault(token_id, []).append(account_id)
    return [
        TokenInfo(
            id=r.id,
            name=r.name,
            hint=r.hint,
            scopes=_scopes(r),
            account_ids=tuple(grants.get(r.id, ())),
            created_at=r.created_at,
            last_used_at=r.last_used_at,
            revoked_at=r.revoked_at,
        )
        for r in rows
    ]


__all__ = [
    "PREFIX",
    "ApiToken",
    "ApiTokenAccount",
    "BadToken",
    "Grant",
    "TokenInfo",
    "UnknownAccounts",
    "accounts_for_token",
    "create_token",
    "granting",
    "listing",
    "lookup",
    "lookup_id",
    "revoke",
    "revoke_ids",
    "token_hash",
    "touch",
]
