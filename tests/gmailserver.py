"""A Gmail-dialect IMAP4rev1 server on loopback, for tests and benchmarks: the real wire protocol (asyncio, TCP),
Gmail's mailbox model (tests/gmailstore.py) and its documented extensions
(developers.google.com/gmail/imap/imap-extensions): X-GM-EXT-1 with X-GM-MSGID, X-GM-THRID and X-GM-LABELS in
FETCH, STORE and SEARCH; SPECIAL-USE attributes in every LIST; CONDSTORE; UIDPLUS; MOVE; IDLE; LITERAL+.

With `gmail=False` the same store is served without X-GM-EXT-1 (its items are refused): what a client that does
not speak the dialect sees of Gmail, each label a folder of copies with UIDs of its own. That is the baseline a
sync without the Gmail dialect works against.

Logins are LOGIN with a password only. Commands of one connection run one after another; what other
connections changed reaches a session as EXISTS, EXPUNGE and FETCH at NOOP, IDLE, and after UID commands
(RFC 3501 §7.4.1 forbids EXPUNGE during FETCH, STORE and SEARCH by sequence number).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from datetime import datetime

from tests.gmailsession import Session
from tests.gmailstore import ALL, Box, GmailStore, Mail
from tests.gmailwire import CAPS, No


# -- the server ------------------------------------------------------------------------------------------
class GmailServer:
    """Serves one GmailStore to every login in `users` (user -> password)."""

    def __init__(self, store: GmailStore | None = None, *, users: dict[str, str] | None = None, gmail: bool = True):
        self.store = store or GmailStore()
        self.users = users or {"me@gmail.test": "secret"}
        self.gmail = gmail
        self.caps = CAPS + (" X-GM-EXT-1" if gmail else "")
        self.port = 0
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()

    async def start(self, port: int = 0) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._sessions):
                task.cancel()
            await asyncio.gather(*self._sessions, return_exceptions=True)
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        try:
            await Session(self, reader, writer).serve()
        except asyncio.CancelledError:
            # stop() ends the sessions so; asyncio's stream callback would log a cancelled handler as an error.
            writer.close()
        finally:
            self._sessions.discard(task)

    # -- folders --------------------------------------------------------------------------------------
    def folder_names(self) -> list[str]:
        return list(self.store.boxes)

    def special(self, name: str) -> str | None:
        return self.store.boxes[name].special if name in self.store.boxes else None

    def box(self, name: str) -> Box:
        if name.upper() == "INBOX":
            name = "INBOX"
        box = self.store.boxes.get(name)
        if box is None:
            raise No("[NONEXISTENT] Unknown Mailbox: " + name + " (Failure)")
        return box

    def create(self, name: str) -> None:
        self.store.create_box(name)

    def delete(self, name: str) -> None:
        self.store.delete_box(name)

    def rename(self, old: str, new: str) -> None:
        self.store.rename_box(old, new)

    def flags_in(self, box: Box, mail: Mail) -> list[str]:
        flags = sorted(mail.flags)
        return [*flags, "\\Deleted"] if mail.msgid in box.deleted else flags

    def append(self, box: Box, raw: bytes, flags: list[str], when: datetime | None) -> int:
        mail = self.store.add(raw, flags=set(flags) - {"\\Deleted"}, internaldate=when)
        # Appended to a folder, a message carries its label (or is in Trash or Spam).
        return self.store.copy_to(mail, box) if box.name != ALL else box.uids[mail.msgid]


@contextlib.contextmanager
def running(server: GmailServer) -> Iterator[GmailServer]:
    """The server on a loop of its own in a thread: for blocking clients (imaplib) and benchmarks."""
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def main() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=main, name="gmailserver", daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
