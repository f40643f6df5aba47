"""Shared fixtures: real MariaDB (a fresh database per test run), real Redis, a real Dovecot, a real Postfix.

Services are reached at INBOXQL_TEST_DATABASE_SERVER (default mysql+asyncmy://root@127.0.0.1:3306) and
INBOXQL_REDIS_URL (default redis://127.0.0.1:6379/0); `scripts/test` starts them when they are down.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from inboxql.devmail import DovecotServer
from inboxql.devsmtp import PostfixServer
from schema.crypto import CredentialBox
from schema.db import create_database, create_engine, drop_database
from schema.migrate import upgrade
from schema.settings import Settings
from schema.unit import Store

SERVER = os.environ.get("INBOXQL_TEST_DATABASE_SERVER", "mysql+asyncmy://root@127.0.0.1:3306")
REDIS_URL = os.environ.get("INBOXQL_REDIS_URL", "redis://127.0.0.1:6379/0")


# A test still running after this long is hung: it fails, and the report shows every task's stack.
HANG_SECONDS = float(os.environ.get("INBOXQL_TEST_HANG_SECONDS", "240"))


@pytest.fixture(autouse=True)
async def hang_guard(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Fail a hung async test with the stack of every pending task, instead of stalling the whole run.

    A hang in asyncio code leaves the loop idle in select(), where a signal-based timeout would show only that;
    the stacks of the tasks say what each one waits for.
    """
    loop = asyncio.get_running_loop()
    # A test that takes long by design names its own limit: @pytest.mark.hang_seconds(600).
    marker = request.node.get_closest_marker("hang_seconds")
    limit = max(HANG_SECONDS, float(marker.args[0])) if marker is not None else HANG_SECONDS

    def expire() -> None:
        tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
        print(f"\n{request.node.nodeid} still running after {limit:.0f} s; {len(tasks)} tasks:", file=sys.stderr)
        for task in tasks:
            task.print_stack(file=sys.stderr)
        for task in tasks:
            task.cancel()

    handle = loop.call_later(limit, expire)
    try:
        yield
    finally:
        handle.cancel()


def fresh_database_url(prefix: str = "inboxql_test") -> str:
    return f"{SERVER}/{prefix}_{os.getpid()}_{secrets.token_hex(4)}?charset=utf8mb4"


@contextlib.contextmanager
def throwaway_database(prefix: str = "inboxql_test") -> Iterator[str]:
    """A database of its own, migrated to the newest revision, dropped at the end."""
    url = fresh_database_url(prefix)
    asyncio.run(create_database(url))
    upgrade(url)
    try:
        yield url
    finally:
        asyncio.run(drop_database(url))


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A database of its own for this test run."""
    with throwaway_database() as url:
        yield url


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, redis_url=REDIS_URL, secret_key=secrets.token_urlsafe(32))


@pytest.fixture(scope="session")
def credential_box(settings: Settings) -> CredentialBox:
    return CredentialBox(settings.secret_key)


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(database_url)
    yield eng
    await eng.dispose()


@pytest.fixture(scope="session")
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
async def store(engine: AsyncEngine, redis: Redis) -> Store:
    return Store(engine, redis)


# What Dovecot 2.3 advertises after login, less the extensions a plainer server would lack.
_BASE_CAPABILITIES = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES THREAD=REFS "
    "THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED "
    "I18NLEVEL=1 ESEARCH ESORT SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE SPECIAL-USE LITERAL+"
)
SERVER_KINDS = {
    "qresync": None,
    "condstore": _BASE_CAPABILITIES + " CONDSTORE",
    "plain": _BASE_CAPABILITIES,
}


def _start_dovecot(capabilities: str | None) -> Iterator[DovecotServer]:
    root = Path(tempfile.mkdtemp(prefix="inboxql-dovecot-"))
    server = DovecotServer(root, capabilities=capabilities)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def dovecot() -> Iterator[DovecotServer]:
    """Dovecot as it comes: CONDSTORE, QRESYNC, IDLE, MOVE, X-GUID."""
    yield from _start_dovecot(None)


@pytest.fixture(scope="session", params=sorted(SERVER_KINDS))
def any_dovecot(request: pytest.FixtureRequest) -> Iterator[DovecotServer]:
    """Dovecot as it comes, and advertising neither QRESYNC, nor QRESYNC and CONDSTORE (older servers)."""
    yield from _start_dovecot(SERVER_KINDS[request.param])


@pytest.fixture(scope="session")
def postfix(dovecot: DovecotServer) -> Iterator[PostfixServer]:
    """Postfix taking submissions (STARTTLS + AUTH as a `dovecot` user) and delivering into `dovecot`:
    mail to `dovecot.address(user)` lands in that user's INBOX."""
    root = Path(tempfile.mkdtemp(prefix="inboxql-postfix-"))
    with PostfixServer(root, dovecot) as server:
        yield server
    shutil.rmtree(root, ignore_errors=True)


def new_user(server: DovecotServer) -> tuple[str, str]:
    """A fresh user with an empty mailbox (and the special-use folders)."""
    user = f"u{secrets.token_hex(5)}"
    password = secrets.token_urlsafe(12)
    server.add_user(user, password)
    return user, password


@pytest.fixture
def mail_user(dovecot: DovecotServer) -> tuple[str, str]:
    return new_user(dovecot)
