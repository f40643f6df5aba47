"""An IMAP proxy between a client and the test Dovecot: it speaks the wire protocol both ways, records what went
over it, and can make Dovecot look like another server.

    client ──► ImapProxy ──► Dovecot
               │ frames commands and responses (literals included), one connection upstream per client
               │ records every command with the untagged responses it got (`exchanges`)
               │ hide_identity: no X-GUID, EMAILID or X-GM-* (answered BAD, as a server without them does),
               │                no OBJECTID in CAPABILITY: the client must fall back to content hashes
               │ offer_objectid: OBJECTID advertised (RFC 8474), EMAILID served from Dovecot's X-GUID
               │ hidden: capabilities left out of CAPABILITY (e.g. NOTIFY: a server without RFC 5465)
               │ drop_recent: no `* n RECENT` (RFC 9051 removed it: an IMAP4rev2 server's IDLE stays quiet
               │              where Dovecot's wakes for a message just seen)
               │ hold(predicate): a matching command's answer is held back until released (a stalled server)

Dovecot advertises neither OBJECTID nor X-GUID (it answers X-GUID all the same), so a server without any identity
of its own, or one that starts offering OBJECTID after an upgrade, can only be had this way. The settings are read
per command: changing them takes effect on the next command of every connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Self

_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")
_IDENTITY_ITEMS = re.compile(rb"\b(X-GUID|EMAILID|THREADID|X-GM-MSGID|X-GM-THRID|X-GM-LABELS)\b", re.IGNORECASE)
_CAPABILITY_CODE = re.compile(rb"\[CAPABILITY ([^\]]*)\]", re.IGNORECASE)
_X_GUID_ITEM = re.compile(rb'X-GUID ("[^"]*"|[^ )]+)')
_RECENT = re.compile(rb"^\* \d+ RECENT\r\n$", re.IGNORECASE)
_FETCH = re.compile(rb"^\* \d+ FETCH ", re.IGNORECASE)
_FETCH_UID = re.compile(rb"\bUID (\d+)", re.IGNORECASE)
_LINE_LIMIT = 16 * 1024 * 1024  # a line between literals (a SEARCH of many UIDs) may be long
_HIDDEN_CAPABILITIES = {b"OBJECTID", b"X-GM-EXT-1"}


@dataclass(slots=True)
class Exchange:
    """One command and what the server said to it (untagged responses sent while it ran). With pipelined commands
    on one connection, an untagged response is credited to the newest one still running."""

    connection: int
    mailbox: str | None  # selected when the command was sent
    command: str  # the command's line(s), literals shown as {n}; LOGIN's arguments left out
    responses: list[str] = field(default_factory=list)  # each untagged response's text, literals left out
    status: str = ""  # the tagged completion, "" while it runs
    bodies: int = 0  # FETCH responses carrying BODY[] (a message downloaded)
    refused: bool = False  # answered by the proxy, never sent to the server
    as_email_id: bool = False  # asked for EMAILID: Dovecot's X-GUID answers as EMAILID

    @property
    def verb(self) -> str:
        """The command's name, with UID's second word: "UID FETCH", "SELECT"."""
        words = self.command.split()
        if len(words) < 2:
            return ""
        if words[1].upper() == "UID" and len(words) > 2:
            return f"UID {words[2].upper()}"
        return words[1].upper()

    @property
    def fetched_uids(self) -> list[int]:
        """The UIDs of the FETCH responses this command got."""
        found = []
        for line in self.responses:
            if _FETCH.match(line.encode()) and (m := _FETCH_UID.search(line.encode())):
                found.append(int(m.group(1)))
        return found

    @property
    def vanished(self) -> list[str]:
        return [line for line in self.responses if line.upper().startswith("* VANISHED")]


@dataclass(slots=True)
class _Hold:
    matches: Callable[[Exchange], bool]
    released: asyncio.Event = field(default_factory=asyncio.Event)
    seen: asyncio.Event = field(default_factory=asyncio.Event)  # a matching command's answer is being held


class ImapProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = "127.0.0.1"
        self.port = 0
        self.hide_identity = False
        self.offer_objectid = False
        self.drop_recent = False
        self.hidden: set[bytes] = set()  # upper case
        self.exchanges: list[Exchange] = []
        self._holds: list[_Hold] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._connections = 0

    # -- life ------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, 0, limit=_LINE_LIMIT)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for hold in self._holds:
            hold.released.set()
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):  # each connection's relays then end on their own
            writer.close()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=10)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- what the tests ask ------------------------------------------------------------------------
    def clear(self) -> None:
        self.exchanges.clear()

    def commands(self, verb: str | None = None) -> list[Exchange]:
        return [e for e in self.exchanges if verb is None or e.verb == verb.upper()]

    @property
    def bodies(self) -> int:
        """Messages downloaded (BODY[] in FETCH responses) since the last clear()."""
        return sum(e.bodies for e in self.exchanges)

    def hold(self, matches: Callable[[Exchange], bool]) -> _Hold:
        """Hold back the answer to the first command that matches until `release(hold)`: the server has run the
        command (its snapshot is taken) but the client does not hear of it."""
        hold = _Hold(matches)
        self._holds.append(hold)
        return hold

    @staticmethod
    def release(hold: _Hold) -> None:
        hold.released.set()

    # -- the wire --------------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._connections += 1
        state = _Connection(self._connections, writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream, limit=_LINE_LIMIT)
        except OSError:
            writer.close()
            self._tasks.discard(task)
            return
        self._writers.update((writer, up_writer))
        upward = asyncio.create_task(self._client_to_server(reader, up_writer, state))
        downward = asyncio.create_task(self._server_to_client(up_reader, writer, state))
        try:
            await asyncio.wait({upward, downward}, return_when=asyncio.FIRST_COMPLETED)
            for t in (upward, downward):
                t.cancel()
            await asyncio.wait({upward, downward})
            for w in (writer, up_writer):
                w.close()
                with contextlib.suppress(OSError):
                    await w.wait_closed()
        finally:
            self._writers.difference_update((writer, up_writer))
            self._tasks.discard(task)

    async def _client_to_server(
        self, reader: asyncio.StreamReader, up: asyncio.StreamWriter, state: _Connection
    ) -> None:
        while True:
            line = await reader.readuntil(b"\r\n")
            if state.idling:  # DONE ends IDLE: not a command
                up.write(line)
                await up.drain()
                state.idling = False
                continue
            words = line.split(None, 2)
            tag = words[0].decode("ascii", "replace") if words else ""
            verb = words[1].upper() if len(words) > 1 else b""
            if self.hide_identity and verb in (b"UID", b"FETCH") and _IDENTITY_ITEMS.search(line):
                # What Dovecot says of an item it does not know.
                exchange = Exchange(state.number, state.mailbox, line.decode("utf-8", "replace").strip(), refused=True)
                exchange.status = f"{tag} BAD Error in IMAP command FETCH: Unknown parameter"
                self.exchanges.append(exchange)
                async with state.write_lock:
                    state.client.write(exchange.status.encode() + b"\r\n")
                    await state.client.drain()
                continue
            # EMAILID asked of the pretended OBJECTID server: Dovecot's X-GUID, served back as EMAILID.
            as_email_id = (
                self.offer_objectid
                and verb in (b"UID", b"FETCH")
                and re.search(rb"\bEMAILID\b", line, re.IGNORECASE) is not None
                and re.search(rb"\bX-GUID\b", line, re.IGNORECASE) is None
            )
            if as_email_id:
                line = re.sub(rb"\bEMAILID\b", b"X-GUID", line, flags=re.IGNORECASE)
            text = [words[0] + b" LOGIN ..." if verb == b"LOGIN" else line.rstrip(b"\r\n")]
            up.write(line)
            await up.drain()
            while m := _LITERAL.search(line):  # a synchronizing literal waits for the server's "+": pass it on first
                up.write(await reader.readexactly(int(m.group(1))))
                line = await reader.readuntil(b"\r\n")
                up.write(line)
                await up.drain()
                if verb != b"LOGIN":
                    text.append(line.rstrip(b"\r\n"))
            exchange = Exchange(state.number, state.mailbox, b" ".join(text).decode("utf-8", "replace"))
            exchange.as_email_id = as_email_id
            if verb in (b"SELECT", b"EXAMINE") and len(words) > 2:
                state.mailbox = words[2].split(b" (")[0].strip().strip(b'"').decode("utf-8", "replace")
                exchange.mailbox = state.mailbox
            elif verb in (b"CLOSE", b"UNSELECT"):
                state.mailbox = None
            if verb == b"IDLE":
                state.idling = True
            state.running[tag] = exchange
            self.exchanges.append(exchange)

    async def _server_to_client(
        self, up: asyncio.StreamReader, client: asyncio.StreamWriter, state: _Connection
    ) -> None:
        while True:
            parts = [await up.readuntil(b"\r\n")]
            while m := _LITERAL.search(parts[-1]):
                parts.append(await up.readexactly(int(m.group(1))))
                parts.append(await up.readuntil(b"\r\n"))
            lines = [p for i, p in enumerate(parts) if i % 2 == 0]
            first = lines[0]
            if self.drop_recent and _RECENT.match(first):
                continue
            if first.startswith(b"* "):
                exchange = state.current()
                as_email_id = exchange is not None and exchange.as_email_id
                lines = [self._rewrite(line, as_email_id=as_email_id) for line in lines]
                if exchange is not None:
                    exchange.responses.append(b"".join(lines).decode("utf-8", "replace").rstrip("\r\n"))
                    if _FETCH.match(first) and re.search(rb"BODY\[\]", b"".join(lines), re.IGNORECASE):
                        exchange.bodies += 1
            elif not first.startswith(b"+"):
                lines = [self._rewrite(line) for line in lines]
                tag = first.split(b" ", 1)[0].decode("ascii", "replace")
                exchange = state.running.pop(tag, None)
                if exchange is not None:
                    exchange.status = first.decode("utf-8", "replace").rstrip("\r\n")
                    await self._maybe_hold(exchange)
            out = b"".join(lines[i // 2] if i % 2 == 0 else parts[i] for i in range(len(parts)))
            async with state.write_lock:
                client.write(out)
                await client.drain()

    async def _maybe_hold(self, exchange: Exchange) -> None:
        for hold in self._holds:
            if not hold.seen.is_set() and hold.matches(exchange):
                hold.seen.set()
                await hold.released.wait()
                return

    def _rewrite(self, line: bytes, *, as_email_id: bool = False) -> bytes:
        """CAPABILITY as the pretended server has it; X-GUID served as EMAILID when OBJECTID is offered."""
        if line.upper().startswith(b"* CAPABILITY "):
            return b"* CAPABILITY " + self._capabilities(line[len(b"* CAPABILITY ") :].rstrip(b"\r\n")) + b"\r\n"
        line = _CAPABILITY_CODE.sub(lambda m: b"[CAPABILITY " + self._capabilities(m.group(1)) + b"]", line)
        if as_email_id and _FETCH.match(line):
            line = _X_GUID_ITEM.sub(lambda m: b"EMAILID (" + _email_id(m.group(1)) + b")", line)
        return line

    def _capabilities(self, words: bytes) -> bytes:
        caps = [
            w
            for w in words.split()
            if not (self.hide_identity and w.upper() in _HIDDEN_CAPABILITIES) and w.upper() not in self.hidden
        ]
        if self.offer_objectid and not self.hide_identity and b"OBJECTID" not in (w.upper() for w in caps):
            caps.append(b"OBJECTID")
        return b" ".join(caps)


def _email_id(guid: bytes) -> bytes:
    """An RFC 8474 objectid (letters, digits, "-" and "_") for a Dovecot GUID (a maildir file's base name)."""
    return b"M" + hashlib.sha256(guid.strip(b'"')).hexdigest()[:24].encode()


@dataclass(slots=True)
class _Connection:
    number: int
    client: asyncio.StreamWriter
    mailbox: str | None = None
    idling: bool = False
    running: dict[str, Exchange] = field(default_factory=dict)
    write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def current(self) -> Exchange | None:
        """The command an untagged response belongs to: the newest one still running."""
        return next(reversed(self.running.values()), None)
