"""`inboxql demo`: the whole product on one machine with no configuration.

It starts a private Dovecot (kept under ~/.local/share/inboxql/demo) with a user whose mailbox is seeded with
generated sample mail, and (as root) a private Postfix that takes submissions for it, creates and migrates the
database, adds the account, syncs it, and then keeps following it (IDLE on the inbox) while serving GraphQL,
until interrupted. Mail sent through the Postfix to demo@inboxql.test shows up live.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import select

from inboxql import commands
from inboxql.devmail import DevMailError, DovecotServer, free_ports
from inboxql.devsmtp import PostfixServer
from inboxql.mailgen import generate
from schema import accounts, changelog
from schema.changelog import ObjectType, Op
from schema.crypto import CredentialBox
from schema.db import create_engine
from schema.models import Account
from schema.settings import Settings
from schema.unit import Store
from synccore.account import Tuning
from synccore.supervisor import Supervisor

log = logging.getLogger("inboxql.demo")
T = TypeVar("T")

DEMO_USER = "demo"
DEMO_PASSWORD = "demo-password"
SAMPLE_MESSAGES = 500


def _demo_dir(given: str | None) -> Path:
    if given:
        return Path(given).resolve()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "inboxql" / "demo"


def _ports(root: Path) -> dict[str, int]:
    """The demo's servers keep their ports across runs, so the stored account stays valid."""
    state = root / "ports.json"
    ports: dict[str, int] = json.loads(state.read_text()) if state.exists() else {}
    missing = [name for name in ("imap", "imaps", "submission") if name not in ports]
    ports.update(zip(missing, free_ports(len(missing), avoid=ports.values()), strict=True))
    root.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps(ports))
    return ports


def _start_dovecot(root: Path) -> DovecotServer:
    ports = _ports(root)
    server = DovecotServer(root / "dovecot", port=ports["imap"], tls_port=ports["imaps"])
    server.start()
    if DEMO_USER not in server.users():
        server.add_user(DEMO_USER, DEMO_PASSWORD)
        mail = list(generate(SAMPLE_MESSAGES, seed=2026))
        inbox = [(raw, ("\\Seen",) if i % 3 else ()) for i, raw in enumerate(mail[:400])]
        server.append(DEMO_USER, DEMO_PASSWORD, "INBOX", inbox)
        server.append(DEMO_USER, DEMO_PASSWORD, "Archive", [(raw, ("\\Seen",)) for raw in mail[400:460]])
        server.append(DEMO_USER, DEMO_PASSWORD, "Sent", [(raw, ("\\Seen",)) for raw in mail[460:]])
    return server


def _start_postfix(root: Path, dovecot: DovecotServer) -> PostfixServer | None:
    """A submission server delivering into the demo's Dovecot; it needs root, so without root there is none."""
    if os.geteuid() != 0:
        return None
    server = PostfixServer(root / "postfix", dovecot, port=_ports(root)["submission"])
    try:
        server.start()
    except DevMailError as err:
        log.warning("no Postfix for the demo: %s", err)
        return None
    return server


async def _ensure_account(settings: Settings, server: DovecotServer, postfix: PostfixServer | None) -> int:
    smtp = accounts.SmtpSettings(postfix.host, postfix.port, "starttls") if postfix is not None else None
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        store = Store(engine)
        async with store.sessions() as s:
            found = await s.scalar(
                select(Account.id).where(
                    Account.imap_host == server.host,
                    Account.imap_port == server.port,
                    Account.imap_username == DEMO_USER,
                )
            )
        if found is not None:
            if smtp is not None:  # the demo's Postfix may be new (or have moved): send through it
                await accounts.set_smtp(store, found, smtp, str(server.ca_file))
            return found
        endpoint = accounts.ImapEndpoint(server.host, server.port, "none", DEMO_USER, str(server.ca_file))
        return await accounts.create(
            store, CredentialBox(settings.key_ring()), "demo@inboxql.test", endpoint, DEMO_PASSWORD, smtp
        )
    finally:
        await engine.dispose()


async def _run(settings: Settings, server: DovecotServer, postfix: PostfixServer | None, port: int) -> int:
    """The demo inside one event loop that owns SIGINT and SIGTERM: the first asks every part to stop in order
    (the gateway finishes its requests and its lifespan, the sync lets its accounts go), a second one cancels."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    main = asyncio.current_task()
    assert main is not None

    def stop_requested() -> None:
        if stop.is_set():
            main.cancel()  # a second Ctrl-C: no more waiting
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_requested)
    try:
        return await _demo(settings, server, postfix, port, stop)
    except asyncio.CancelledError:
        return 130
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _unless_stopped(stop: asyncio.Event, work: Coroutine[Any, Any, T]) -> T | None:
    """`work`'s result, or None when `stop` is set first (the work is cancelled then)."""
    task = asyncio.create_task(work)
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


async def _demo(
    settings: Settings, server: DovecotServer, postfix: PostfixServer | None, port: int, stop: asyncio.Event
) -> int:
    from gateway.ids import to_global
    from gateway.server import server as gateway_server

    if await _unless_stopped(stop, commands.db_upgrade(settings)) is None:
        return 130
    account_id = await _unless_stopped(stop, _ensure_account(settings, server, postfix))
    if account_id is None:
        return 130
    say(f"Dovecot: imap://{DEMO_USER}@{server.host}:{server.port} (password {DEMO_PASSWORD})")
    if postfix is not None:
        say(
            f"Postfix: submission on {postfix.host}:{postfix.port} (STARTTLS required, CA {postfix.ca_file}; "
            f"AUTH as {DEMO_USER}); mail to {postfix.address(DEMO_USER)} lands in the demo inbox"
        )
    say(f"Account {account_id}: initial sync...")
    supervisor = Supervisor(settings, Tuning(poll_interval=10.0))
    try:
        code = await _unless_stopped(stop, supervisor.run_once([account_id]))
        if code is None:
            return 130
        if code != 0:
            return code
        # Admin: the demo is a local playground on sample mail, and the token grants only the demo account, so
        # the newcomer may try webhooks too (admin widens what a token may do, never which accounts it reaches).
        token = await commands.new_token(settings, [account_id], admin=True)
        graphql = f"http://127.0.0.1:{port}/graphql"
        headers = quote(json.dumps({"Authorization": f"Bearer {token}"}))
        account = json.dumps(to_global("Account", account_id))
        query = quote(f"{{ threads(accountId: {account}, first: 10) {{ edges {{ node {{ subject unread }} }} }} }}")
        say(f"Synced: inboxql verify {account_id} compares the mirror with Dovecot.")
        # The token in the fragment: the browser never sends it, so no access log holds it (gateway.graphiql).
        say(f"GraphiQL: {graphql}?q={query}#headers={headers}")
        say(f"API token (shown once; admin: it may also manage the account's webhooks): {token}")
        # An operator token of its own: the status page names every account, which an account's token may not see.
        operator = await commands.new_token(settings, [], operator=True, name="demo status page")
        say(f"Status page: http://127.0.0.1:{port}/status#token={operator}")
        say("Following the mailbox (IDLE on the inbox) and serving GraphQL; Ctrl-C stops.")
        web = gateway_server(settings, "127.0.0.1", port)
        serving = asyncio.create_task(web.serve())
        others = {
            asyncio.create_task(supervisor.run_forever([account_id])),
            asyncio.create_task(_announce(supervisor.store, settings.redis_url, account_id)),
        }
        stopped = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait({serving, stopped, *others}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            web.should_exit = True  # the gateway stops taking requests and finishes its lifespan
            stopped.cancel()
            for task in others:
                task.cancel()
            await asyncio.gather(serving, *others, return_exceptions=True)
        for task in (serving, *others):  # a part that ended on its own, not by the stop, says why
            error = task.exception() if task in done and not task.cancelled() else None
            if error is not None:
                raise error
        say("Stopped.")
    finally:
        await supervisor.close()
    return 0


async def _announce(store: Store, redis_url: str, account_id: int) -> None:
    """A line for each message that arrives (or is sent) from now on: the mirror at work, live.

    Woken by the account's doorbell in Redis (a subscription of its own: the store's client answers within a
    second or gives up), with a look at the change log every few seconds besides, and only that without Redis.
    """
    async with store.sessions() as s:
        cursor = await changelog.newest_seq(s, account_id)
    redis = Redis.from_url(redis_url, socket_connect_timeout=2, health_check_interval=5)
    pubsub = None
    try:
        while True:
            try:
                if pubsub is None:
                    pubsub = redis.pubsub(ignore_subscribe_messages=True)
                    await pubsub.subscribe(store.doorbells.channel(account_id))
                await pubsub.get_message(timeout=5.0)
            except RedisError:  # Redis away: the change log is read on the timer alone until it is back
                if pubsub is not None:
                    with contextlib.suppress(RedisError):
                        await pubsub.aclose()
                pubsub = None
                await asyncio.sleep(5.0)
            async with store.sessions() as s:
                changes = await changelog.read(s, account_id, cursor)
            cursor = max((c.seq for c in changes), default=cursor)
            for change in changes:
                if change.object_type is ObjectType.MESSAGE and change.op is Op.CREATE and change.data:
                    subject = change.data.get("subject") or "(no subject)"
                    senders = ", ".join(a.get("address", "") for a in change.data.get("from") or []) or "(no sender)"
                    say(f"New message {change.object_id}: {subject} - from {senders}")
    finally:
        await redis.aclose()


def say(line: str) -> None:
    print(line, flush=True)


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM before the event loop runs: the same way out as Ctrl-C


def run(settings: Settings, directory: str | None, port: int) -> int:
    # SIGTERM (docker stop, systemd, timeout) ends the demo like Ctrl-C, through the finally below, so that its
    # Dovecot and Postfix stop too instead of outliving it. While the event loop runs, _run owns both signals.
    signal.signal(signal.SIGTERM, _terminated)
    root = _demo_dir(directory)
    server = _start_dovecot(root)
    postfix = None
    try:
        postfix = _start_postfix(root, server)
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(_run(settings, server, postfix, port))
        return 130
    finally:
        if postfix is not None:
            postfix.stop()
        server.stop()
