"""`inboxql token create --account ID ...`: what the CLI calls."""

from __future__ import annotations

from collections.abc import Iterable

from schema import tokens
from schema.db import create_engine, session_factory
from schema.settings import Settings


async def create_token_cli(settings: Settings, account_ids: Iterable[int]) -> str:
    """Create a token for these accounts and return its plaintext (shown once, stored only as a hash).

    Raises schema.tokens.UnknownAccounts when an account does not exist.
    """
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        async with session_factory(engine)() as session, session.begin():
            return await tokens.create_token(session, account_ids)
    finally:
        await engine.dispose()
