"""`Connection`: one pipelined IMAP connection (RFC 3501 §5.5): tags, routing, timeouts, failure.

It knows no command but CAPABILITY, STARTTLS and whatever `execute` is given; `client.ImapClient`
builds the commands on it.

Commands may be issued concurrently: each gets its own tag and they are written in order on the one
connection. An untagged response belongs to the oldest pending command that asks for its kind, and
for UID FETCH / STORE / MOVE also names a UID in the command's set: Dovecot runs pipelined FETCHes in
parallel and sends their tagged OKs together at the end, so "the oldest pending command" alone would
give one command every answer. Mailbox changes no command asked for (EXISTS, EXPUNGE, FETCH,
VANISHED) are appended to `unsolicited`, which the caller drains. Every call has a timeout, and a
dropped connection fails every pending command with `ConnectionLost`.

A command's timeout is one of inactivity, not of total time: it expires when the connection has moved no byte
(none received, none of ours sent) for that long. A FETCH of large bodies over a slow link takes as long as it
takes while bytes flow; a link that stalls is given up after `timeout` seconds of silence, and the connection
with it (whatever the server sends later could not be matched to a command any more).
"""

# Every call takes its own `timeout` (ASYNC109 prefers the caller's asyncio.timeout): the client must
# turn an expiry into ImapTimeout and, mid-literal or in IDLE, drop the connection that can no longer
# be trusted; a per-client default also keeps a forgotten timeout from hanging a sync forever.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import count
from typing import Literal as TypingLiteral
from typing import Self

from .command import Part, encode_command
from .errors import CommandFailed, ConnectionLost, ImapError, ImapTimeout, MissingCapability, ProtocolError
from .parser import parse_response
from .reader import ResponseReader
from .responses import (
    Capability,
    Continuation,
    Enabled,
    ESearch,
    Exists,
    Expunge,
    FetchItem,
    Mailbox,
    MailboxStatus,
    Response,
    StatusResponse,
    Untagged,
    Vanished,
)

logger = logging.getLogger("synccore.imap")

Security = TypingLiteral["tls", "starttls", "none"]

_READ_SIZE = 1 << 18
# Literals are written in pieces of this size, each counting as activity once the transport has taken it.
_WRITE_PIECE = 1 << 18
MAX_UNSOLICITED = 10_000
_NONE: frozenset[type] = frozenset()
_CHANGES = (Exists, Expunge, FetchItem, Vanished)
# RFC 5465 §5: what NOTIFY sends of mailboxes other than the selected one (STATUS), and of mailboxes created,
# deleted or renamed (LIST).
_NOTICES = (*_CHANGES, MailboxStatus, Mailbox)


@dataclass(slots=True, eq=False)
class _Command:
    name: str
    tag: str
    future: asyncio.Future[StatusResponse]
    expects: frozenset[type]
    uids: _UidRanges | None = None  # a UID command's set, to route its FETCH / VANISHED responses
    mailbox: bytes | None = None  # STATUS's mailbox, to route `* STATUS` when several are pipelined
    untagged: list[Untagged] = field(default_factory=list)
    event: asyncio.Event | None = None  # set on every response, for IDLE


class Connection:
    """One IMAP connection: `await connect(...)`, then commands (see `ImapClient`).

    `timeout` is the default, in seconds, for every call that does not pass its own.
    """

    def __init__(self, *, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._framer = ResponseReader()
        self._early: deque[tuple[str | None, Response]] = deque()
        self._pending: dict[str, _Command] = {}  # insertion order = the order sent
        self._tags = count(1)
        self._write_lock = asyncio.Lock()
        self._continuation: asyncio.Future[Continuation] | None = None
        self._capabilities: frozenset[str] = frozenset()
        self._caps_seen = 0  # bumped on every capability update, to know whether to ask
        self._enabled: set[str] = set()
        self._unsolicited: list[Untagged] = []
        self.unsolicited_dropped = 0  # how many undrained unsolicited responses were discarded
        # Mailbox changes the server told of unasked, counted (see `notices`), and which mailboxes they named (see
        # `take_told`).
        self._notices = 0
        self._told: set[str] = set()
        self._told_unnamed = False
        self._read_task: asyncio.Task[None] | None = None
        self._lost: ImapError | None = None
        self._bye: StatusResponse | None = None
        self._idle: _Command | None = None
        # The inactivity deadlines of the commands waiting now, each with its length: moved on by every byte.
        self._watches: list[tuple[asyncio.Timeout, float]] = []

    # ------------------------------------------------------------------ state

    @property
    def capabilities(self) -> frozenset[str]:
        """Upper-cased capabilities, refreshed after STARTTLS and login."""
        return self._capabilities

    def has(self, capability: str) -> bool:
        return capability.upper() in self._capabilities

    @property
    def enabled(self) -> frozenset[str]:
        """Extensions turned on with ENABLE (RFC 5161)."""
        return frozenset(self._enabled)

    @property
    def unsolicited(self) -> list[Untagged]:
        """EXISTS / EXPUNGE / FETCH / VANISHED that no command asked for, oldest first.

        Bounded: past `MAX_UNSOLICITED` undrained entries the oldest half is dropped and counted in
        `unsolicited_dropped` (a caller that saw drops should resynchronise the mailbox).
        """
        return self._unsolicited

    @property
    def notices(self) -> int:
        """How many mailbox changes the server has told of unasked since the connection opened: EXISTS, EXPUNGE,
        FETCH and VANISHED of the selected mailbox, and, under RFC 5465 NOTIFY, STATUS and LIST of any mailbox.
        Never drained: a caller compares the count before and after its work to know whether something changed
        meanwhile (a STATUS of another mailbox arriving between two commands is answered to nobody)."""
        return self._notices

    def take_told(self) -> frozenset[str] | None:
        """The mailboxes that the notices since the last call named, and forget them: a STATUS names its mailbox, an
        EXISTS, EXPUNGE, FETCH or VANISHED the one selected when it came. None when one of them named no mailbox known
        here (a LIST: a mailbox created, deleted or renamed; a change that came while no mailbox was known selected)."""
        told = None if self._told_unnamed else frozenset(self._told)
        self._told.clear()
        self._told_unnamed = False
        return told

    def _note_told(self, resp: Untagged) -> None:
        if isinstance(resp, MailboxStatus):
            self._told.add(resp.name)
            return
        name = self._selected_name() if isinstance(resp, _CHANGES) else None
        if name is None:
            self._told_unnamed = True
        else:
            self._told.add(name)

    def _selected_name(self) -> str | None:
        """The mailbox selected now, where a subclass keeps track of it."""
        return None

    def drain_unsolicited(self) -> list[Untagged]:
        """Return and forget the queued unsolicited responses."""
        out, self._unsolicited = self._unsolicited, []
        return out

    @property
    def is_connected(self) -> bool:
        return self._writer is not None and self._lost is None

    # ------------------------------------------------------------------ connection

    async def connect(
        self,
        host: str,
        port: int,
        *,
        security: Security = "tls",
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 30.0,
    ) -> StatusResponse:
        """Open the connection and read the greeting; returns the greeting.

        TLS is verified by default (`ssl.create_default_context()`); pass a context to trust a
        private CA. Failing to connect (refused, TLS verification) raises `ConnectionLost` whose
        `__cause__` is the original `OSError`.
        """
        if security not in ("tls", "starttls", "none"):
            raise ValueError(f"security must be tls, starttls or none, not {security!r}")
        context = ssl_context or ssl.create_default_context() if security != "none" else None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host,
                    port,
                    ssl=context if security == "tls" else None,
                    server_hostname=host if security == "tls" else None,
                    limit=_READ_SIZE,
                )
                self._reader, self._writer = reader, writer
                _, greeting = await self._read_early()
                if not isinstance(greeting, StatusResponse) or greeting.status not in (
                    "OK",
                    "PREAUTH",
                ):
                    raise ConnectionLost(f"server refused the connection: {greeting!r}")
                self._note_code_caps(greeting)
                if security == "starttls":
                    assert context is not None
                    await self._starttls(context, host)
        except TimeoutError:
            self._abort_transport()
            raise ImapTimeout(f"connecting to {host}:{port} took over {timeout} s") from None
        except ImapError:
            self._abort_transport()
            raise
        except OSError as exc:  # refused, reset, ssl.SSLCertVerificationError, ...
            self._abort_transport()
            raise ConnectionLost(f"cannot connect to {host}:{port}: {exc}") from exc
        self._read_task = asyncio.get_running_loop().create_task(self._read_loop())
        if not self._capabilities:
            await self.capability(timeout=timeout)
        return greeting

    async def _read_early(self) -> tuple[str | None, Response]:
        # Before the read loop runs (greeting, STARTTLS), responses are read here directly.
        assert self._reader is not None
        while not self._early:
            data = await self._reader.read(_READ_SIZE)
            if not data:
                raise ConnectionLost("server closed the connection during the greeting")
            self._early.extend(parse_response(raw) for raw in self._framer.feed(data))
        return self._early.popleft()

    async def _starttls(self, context: ssl.SSLContext, host: str) -> None:
        assert self._writer is not None
        if "STARTTLS" not in self._capabilities and self._capabilities:
            raise MissingCapability("STARTTLS")
        self._writer.write(b"S1 STARTTLS\r\n")
        while True:
            tag, resp = await self._read_early()
            if tag == "S1" and isinstance(resp, StatusResponse):
                break
        if resp.status != "OK":
            raise CommandFailed("STARTTLS", resp.status, resp.text, resp.code)
        if self._early or self._framer.pending:
            # RFC 3501 §6.2.1 / CVE-2011-0411 class: bytes sent before the handshake are injected
            raise ProtocolError("data after STARTTLS OK before the TLS handshake")
        await self._writer.start_tls(context, server_hostname=host)
        # RFC 3501 §6.2.1: capabilities learnt before STARTTLS must be discarded.
        self._capabilities = frozenset()

    async def _read_loop(self) -> None:
        assert self._reader is not None
        reader = self._reader
        framer = self._framer
        error: ImapError
        try:
            while True:
                data = await reader.read(_READ_SIZE)
                if not data:
                    text = f": {self._bye.text}" if self._bye is not None else ""
                    error = ConnectionLost("server closed the connection" + text)
                    break
                self._active()
                for raw in framer.feed(data):
                    tag, resp = parse_response(raw)
                    self._dispatch(tag, resp)
        except ImapError as exc:
            error = exc
        except OSError as exc:
            error = ConnectionLost(f"connection broke: {exc}")
        except Exception as exc:  # a bug here must fail the callers, not leave them hanging
            logger.exception("IMAP read loop failed")
            error = ProtocolError(f"internal error reading responses: {exc!r}")
        except asyncio.CancelledError:
            self._fail_all(ConnectionLost("connection closed by the client"))
            raise
        self._fail_all(error)
        self._abort_transport()

    def _dispatch(self, tag: str | None, resp: Response) -> None:
        if isinstance(resp, Continuation):
            waiter = self._continuation
            if waiter is not None and not waiter.done():
                waiter.set_result(resp)
            else:
                logger.warning("unexpected continuation request: %r", resp.text[:80])
            return
        if tag is not None:
            assert isinstance(resp, StatusResponse)
            self._note_code_caps(resp)
            cmd = self._pending.pop(tag, None)
            if cmd is None:
                logger.warning("response for unknown tag %s", tag)
                return
            if not cmd.future.done():
                cmd.future.set_result(resp)
            if cmd.event is not None:
                cmd.event.set()
            return
        if isinstance(resp, Capability):
            self._set_caps(resp.capabilities)
        elif isinstance(resp, StatusResponse):
            self._note_code_caps(resp)
            if resp.status == "BYE":
                self._bye = resp
        elif isinstance(resp, Enabled):
            self._enabled.update(resp.capabilities)
        owner, solicited = self._owner(resp)
        if owner is not None:
            owner.untagged.append(resp)
            if owner.event is not None:
                owner.event.set()
        if not solicited and isinstance(resp, _NOTICES):
            self._notices += 1
            self._note_told(resp)
        if not solicited and isinstance(resp, _CHANGES):
            self._unsolicited.append(resp)
            if len(self._unsolicited) > MAX_UNSOLICITED:
                # Nobody is draining: keep the newest half rather than grow without end.
                dropped = len(self._unsolicited) // 2
                del self._unsolicited[:dropped]
                self.unsolicited_dropped += dropped

    def _owner(self, resp: Untagged) -> tuple[_Command | None, bool]:
        """Which pending command an untagged response answers, and whether it asked for it.

        Dovecot runs pipelined FETCHes in parallel and sends all their tagged OKs at the end, so
        "the oldest pending command" is wrong for them: a FETCH goes to the oldest command that
        asks for that kind of response and, for UID commands, whose UID set holds its UID.
        """
        if isinstance(resp, ESearch) and resp.tag is not None:
            tagged = self._pending.get(resp.tag)  # RFC 4731: the correlator names the command
            if tagged is not None:
                return tagged, True
        uid: int | None = None
        if isinstance(resp, FetchItem):
            uid = resp.uid
        elif isinstance(resp, Vanished) and resp.earlier and resp.uids:
            uid = resp.uids[0]
        for cmd in self._pending.values():
            if not _solicited(cmd, resp):
                continue
            if uid is not None and cmd.uids is not None and uid not in cmd.uids:
                continue
            if isinstance(resp, MailboxStatus) and cmd.mailbox is not None and cmd.mailbox != resp.raw_name:
                continue
            return cmd, True
        return next(iter(self._pending.values()), None), False

    def _active(self) -> None:
        """Bytes moved: every waiting command's inactivity deadline starts again."""
        if not self._watches:
            return
        now = asyncio.get_running_loop().time()
        for watch, limit in self._watches:
            if not watch.expired():
                watch.reschedule(now + limit)

    def _note_code_caps(self, resp: StatusResponse) -> None:
        if resp.code is not None and resp.code.name == "CAPABILITY":
            value = resp.code.value
            if isinstance(value, tuple):
                self._set_caps(frozenset(str(v) for v in value))

    def _set_caps(self, caps: frozenset[str]) -> None:
        self._capabilities = caps
        self._caps_seen += 1

    def _fail_all(self, error: ImapError) -> None:
        if self._lost is None:
            self._lost = error
        pending, self._pending = self._pending, {}
        for cmd in pending.values():
            if not cmd.future.done():
                cmd.future.set_exception(error)
                cmd.future.exception()  # mark retrieved: a timed-out caller may never look
            if cmd.event is not None:
                cmd.event.set()
        waiter = self._continuation
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
            waiter.exception()

    def _abort_transport(self) -> None:
        if self._writer is not None:
            self._writer.transport.abort()

    async def close(self) -> None:
        """Drop the connection without LOGOUT; pending commands fail with `ConnectionLost`."""
        self._fail_all(ConnectionLost("connection closed by the client"))
        self._abort_transport()
        task = self._read_task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ sending

    def _check_usable(self) -> None:
        if self._lost is not None:
            raise ConnectionLost(str(self._lost)) from self._lost
        if self._writer is None:
            raise ConnectionLost("not connected")
        if self._idle is not None:
            raise RuntimeError("IDLE in progress: call idle_done() before other commands")

    async def _send(
        self,
        name: str,
        segments: list[tuple[bytes, bool]],
        expects: frozenset[type],
        *,
        uids: str | None = None,
        mailbox: bytes | None = None,
        secret: bool = False,
        idle: bool = False,
    ) -> _Command:
        """Write one command; returns once written (and any continuation has been granted)."""
        self._check_usable()
        async with self._write_lock:
            self._check_usable()
            assert self._writer is not None
            tag = f"A{next(self._tags)}"
            # RFC 3501 §9 tag: the segments were built with a placeholder tag, fill it in
            segments = [(tag.encode() + segments[0][0], segments[0][1]), *segments[1:]]
            loop = asyncio.get_running_loop()
            ranges = _UidRanges(uids) if uids else None
            cmd = _Command(name, tag, loop.create_future(), expects, ranges, mailbox)
            if idle:
                cmd.event = asyncio.Event()
            self._pending[tag] = cmd
            if logger.isEnabledFor(logging.DEBUG):
                # Never log credentials: for LOGIN / AUTHENTICATE only the command name.
                # Otherwise the first line only: literals may be whole messages.
                first = segments[0][0].split(b"\r\n", 1)[0][len(tag) + 1 :]
                logger.debug("C: %s %s", tag, name if secret else first[:200].decode("ascii", "replace"))
            sent = 0
            partial = False  # a segment is written only in part: the server waits for the rest
            try:
                for data, wait in segments:
                    if wait:
                        self._continuation = loop.create_future()
                    sent += 1
                    view = memoryview(data)
                    for start in range(0, len(data), _WRITE_PIECE):
                        self._writer.write(view[start : start + _WRITE_PIECE])
                        partial = start + _WRITE_PIECE < len(data)
                        await self._writer.drain()
                        self._active()
                    if wait:
                        cont = self._continuation
                        assert cont is not None
                        done, _ = await asyncio.wait((cont, cmd.future), return_when=asyncio.FIRST_COMPLETED)
                        self._continuation = None
                        if cont not in done:
                            break  # tagged NO/BAD instead of "+": the caller sees the status
                        cont.result()  # raises ConnectionLost if that is why it completed
                if idle:
                    self._idle = cmd
            except asyncio.CancelledError:
                # Stopped between the segments of one command: the server is waiting for the
                # rest, so the stream is unusable.
                if partial or 0 < sent < len(segments) or (sent and segments[sent - 1][1]):
                    self._fail_all(ConnectionLost(f"{name} interrupted mid-command"))
                    self._abort_transport()
                raise
            except (ConnectionError, OSError) as exc:
                error = ConnectionLost(f"connection broke while sending {name}: {exc}")
                self._fail_all(error)
                self._abort_transport()
                raise error from exc
            return cmd

    async def _run(
        self,
        name: str,
        parts: Sequence[Part],
        expects: frozenset[type] = _NONE,
        *,
        timeout: float | None,
        uids: str | None = None,
        mailbox: bytes | None = None,
        secret: bool = False,
        failure: type[CommandFailed] = CommandFailed,
    ) -> tuple[StatusResponse, list[Untagged]]:
        words = [w.encode() for w in name.split()]
        segments = encode_command(
            b"",
            [*words, *parts],
            literal_plus="LITERAL+" in self._capabilities,
            literal_minus="LITERAL-" in self._capabilities,
        )
        # encode_command prefixed a space for the first word after the empty tag; keep it as the
        # separator between the tag we add in _send and the command name.
        return await self._run_segments(
            name, segments, expects, timeout=timeout, uids=uids, mailbox=mailbox, secret=secret, failure=failure
        )

    async def _run_segments(
        self,
        name: str,
        segments: list[tuple[bytes, bool]],
        expects: frozenset[type],
        *,
        timeout: float | None,
        uids: str | None = None,
        mailbox: bytes | None = None,
        secret: bool = False,
        failure: type[CommandFailed] = CommandFailed,
    ) -> tuple[StatusResponse, list[Untagged]]:
        limit = self.timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(limit) as watch:
                entry = (watch, limit)
                self._watches.append(entry)
                try:
                    cmd = await self._send(name, segments, expects, uids=uids, mailbox=mailbox, secret=secret)
                    status = await cmd.future
                finally:
                    self._watches.remove(entry)
        except TimeoutError:
            error = ImapTimeout(f"{name}: the connection moved no byte for {limit} s")
            # A stalled link: what the server might still send could not be trusted to match our commands.
            self._fail_all(error)
            self._abort_transport()
            raise error from None
        if status.status != "OK":
            raise failure(name, status.status, status.text, status.code)
        return status, cmd.untagged

    async def capability(self, *, timeout: float | None = None) -> frozenset[str]:
        """CAPABILITY (RFC 3501 §6.1.1): ask again; also updates `capabilities`."""
        await self._run("CAPABILITY", (), frozenset({Capability}), timeout=timeout)
        return self._capabilities

    async def execute(
        self, command: str, *args: Part, timeout: float | None = None
    ) -> tuple[StatusResponse, list[Untagged]]:
        """Run any command: `command` is sent as is, each arg after a space (bytes raw, `Literal`
        as a literal). Returns the tagged OK and the untagged responses; raises on NO/BAD."""
        return await self._run(command, args, _NONE, timeout=timeout)


class _UidRanges:
    """Membership in a UID set as sent (`1:3,7,9:*`); a range with `*` matches every UID, as
    `n:*` names the highest UID even when it is below n (RFC 3501 §9 seq-range)."""

    __slots__ = ("_ranges",)

    def __init__(self, text: str) -> None:
        ranges: list[tuple[int, int]] = []
        for part in text.split(","):
            lo, _, hi = part.partition(":")
            if lo == "*" or hi == "*":
                ranges = [(1, 1 << 63)]
                break
            a, b = int(lo), int(hi or lo)
            ranges.append((min(a, b), max(a, b)))
        self._ranges = ranges

    def __contains__(self, uid: int) -> bool:
        return any(lo <= uid <= hi for lo, hi in self._ranges)


def _solicited(cmd: _Command, resp: Untagged) -> bool:
    if isinstance(resp, Vanished):
        # (EARLIER) only ever answers a command (RFC 7162 §3.2.10); a plain VANISHED is an
        # expunge, asked for only by expunging commands.
        return resp.earlier or Expunge in cmd.expects
    return type(resp) in cmd.expects
