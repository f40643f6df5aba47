"""Initial sync of a 2,000-message Gmail mailbox: in Gmail's model (X-GM-EXT-1) against the same mail as plain IMAP
folders, and the bytes each fetched, counted at the server.

    .venv/bin/python -m bench.gmail_bench [--messages 2000]

The server is tests/gmailserver.py (the Gmail-dialect IMAP server on loopback, in a thread of this process),
seeded with tests/sync/gmail_mailbox.py's mailbox: threads of four, two user labels per message, a third in
INBOX, a fifth \\Important, a seventh \\Sent, an eleventh starred. Each run syncs into a fresh database, in this
process (`AccountSync.run_once`), then `verify`s the mirror:

1. **gmail**: the server offers X-GM-EXT-1, so only All Mail (and Trash, Spam) is downloaded and the label
   folders are derived from X-GM-LABELS;
2. **plain folders**: the same store served without X-GM-EXT-1, as a server without the dialect would hold it:
   each label a folder of copies, every folder synced and every copy downloaded (identity by content).

Goal: the Gmail path fetches each message body once (bodies fetched == messages).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import func, select

from bench import common
from schema import accounts
from schema.crypto import CredentialBox
from schema.db import create_database, create_engine, drop_database
from schema.migrate import upgrade
from schema.models import Message, MessagePlace
from schema.unit import Store
from synccore.account import AccountSync
from synccore.verify import verify
from tests.gmailserver import GmailServer, running
from tests.gmailstore import GmailStore
from tests.sync.gmail_mailbox import seed

USER, PASSWORD = "me@gmail.test", "bench"


@dataclass(frozen=True, slots=True)
class Run:
    name: str
    wall: float
    bodies: int
    body_bytes: int
    sent_bytes: int
    messages: int
    places: int
    differences: int


async def _sync(port: int, url: str, mail: GmailStore) -> tuple[float, tuple[int, int, int], int, int, int]:
    engine = create_engine(url)
    try:
        store = Store(engine)
        box = CredentialBox(secrets.token_urlsafe(32))
        endpoint = accounts.ImapEndpoint("127.0.0.1", port, "none", USER)
        account_id = await accounts.create(store, box, USER, endpoint, PASSWORD)
        started = time.perf_counter()
        await AccountSync(store, box, account_id).run_once()
        wall = time.perf_counter() - started
        # verify downloads every body again to compare it: the sync's figures are taken before.
        fetched = (mail.stats.bodies, mail.stats.body_bytes, mail.stats.sent_bytes)
        differences = len(await verify(store, box, account_id))
        async with store.sessions() as s:
            messages = await s.scalar(select(func.count()).select_from(Message).where(Message.account_id == account_id))
            places = await s.scalar(
                select(func.count()).select_from(MessagePlace).where(MessagePlace.account_id == account_id)
            )
        return wall, fetched, int(messages or 0), int(places or 0), differences
    finally:
        await engine.dispose()


def run(name: str, count: int, *, gmail: bool) -> Run:
    mail = GmailStore()
    seed(mail, count)
    url = common.database_url(f"inboxql_bench_gmail_{secrets.token_hex(3)}")
    asyncio.run(create_database(url))
    try:
        upgrade(url)
        with running(GmailServer(mail, users={USER: PASSWORD}, gmail=gmail)) as server:
            wall, fetched, messages, places, differences = asyncio.run(_sync(server.port, url, mail))
    finally:
        asyncio.run(drop_database(url))
    return Run(name, wall, *fetched, messages, places, differences)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    args = parser.parse_args()
    common.check_services()
    print(f"machine: {common.machine()}")
    print(f"load average at start: {common.load_average()}")
    mail = GmailStore()
    seed(mail, args.messages)
    raw = sum(len(m.raw) for m in mail.mails.values())
    copies = sum(len(b.uids) for b in mail.boxes.values())
    print(f"mailbox: {len(mail.mails)} messages, {raw / common.MIB:.2f} MiB raw, {len(mail.boxes)} folders holding")
    print(f"  {copies} folder entries as plain IMAP sees them ({copies / len(mail.mails):.2f} per message)")
    results = [run("gmail (X-GM-EXT-1)", args.messages, gmail=True), run("plain folders", args.messages, gmail=False)]
    print()
    print("| sync | wall s | msg/s | bodies fetched | body MiB | bytes sent MiB | messages | places | verify |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        verdict = "identical" if r.differences == 0 else f"{r.differences} differences"
        print(
            f"| {r.name} | {r.wall:.2f} | {args.messages / r.wall:,.0f} | {r.bodies:,}"
            f" | {r.body_bytes / common.MIB:.2f} | {r.sent_bytes / common.MIB:.2f} | {r.messages:,} | {r.places:,}"
            f" | {verdict} |"
        )
    gm = results[0]
    goal = "met" if gm.bodies == args.messages else "MISSED"
    print(
        f"\ngoal (each body fetched once on the Gmail path): {goal} ({gm.bodies} bodies for {args.messages} messages)"
    )
    print(f"load average at the end: {common.load_average()}")


if __name__ == "__main__":
    main()
