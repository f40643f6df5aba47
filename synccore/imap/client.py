"""`ImapClient`: the IMAP4rev1 commands (RFC 3501) and extensions a sync engine needs.

Built on `connection.Connection`, which pipelines, routes responses and handles timeouts and loss.

IDLE (RFC 2177): `idle_start()`, then `wait_push(timeout)` as often as needed, then `idle_done()`;
or `async with client.idle() as events: batch = await events.next(timeout)`. No other command may
be sent while idling. RFC 2177 §3 lets servers drop a client idle for 30 minutes, so the caller
must end IDLE and start it again before 29 minutes have passed.
"""

# ruff: noqa: ASYNC109 - every call takes its own timeout, see connection.py

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime
from typing import Literal as TypingLiteral

from . import sasl
from .command import Literal, Part, astring, mailbox, quoted
from .connection import Connection, Security
from .errors import AuthenticationFailed, CommandFailed, ConnectionLost, ImapTimeout, MissingCapability
from .responses import (
    AppendUid,
    CopyUid,
    Enabled,
    ESearch,
    Exists,
    Expunge,
    FetchItem,
    Flags,
    Mailbox,
    MailboxStatus,
    Recent,
    Search,
    StatusResponse,
    Untagged,
    Vanished,
)
from .results import FetchResult, SelectedMailbox, StoreResult
from .uidset import format_uid_set
from .utf7 import encode_mailbox

__all__ = ["IdleEvents", "ImapClient", "Security", "StoreAction"]

StoreAction = TypingLiteral["add", "remove", "set"]
UidSet = str | Iterable[int]

_STORE_ITEM = {"add": b"+FLAGS", "remove": b"-FLAGS", "set": b"FLAGS"}
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# RFC 3501 §9: flag = "\" atom / keyword atom
_FLAG = re.compile(r"\\?[!#$&'+,\-./0-9:;<=>?@A-Z\[^_`a-z|}~]+\Z")

# Which untagged responses a command asks for; the others of the mailbox-change kinds are also
# queued as unsolicited.
_SELECT = frozenset({Exists, Recent, Flags, FetchItem, Vanished, StatusResponse})
_SEARCH = frozenset({Search, ESearch})
_MOVE = frozenset({Expunge, Vanished, StatusResponse})  # RFC 6851 §4.3: COPYUID in an untagged OK
_FETCH = frozenset({FetchItem})
_EXPUNGING = frozenset({Expunge, Vanished})
_IDLE = frozenset({Exists, Expunge, FetchItem, Vanished, Recent})
_NONE: frozenset[type] = frozenset()


class ImapClient(Connection):
    """An IMAP client: `await connect(...)`, `await login(...)`, then commands.

    `timeout` is the default, in seconds, for every call that does not pass its own.
    """

    def __init__(self, *, timeout: float = 30.0) -> None:
        super().__init__(timeout=timeout)
        self.selected: SelectedMailbox | None = None
        self._search_lock = asyncio.Lock()

    def _selected_name(self) -> str | None:
        return None if self.selected is None else self.selected.name

    # ------------------------------------------------------------------ any state

    async def noop(self, *, timeout: float | None = None) -> None:
        """NOOP: lets the server report mailbox changes, which land in `unsolicited`."""
        await self._run("NOOP", (), timeout=timeout)

    async def logout(self, *, timeout: float | None = None) -> None:
        """LOGOUT, then close. A connection that is already gone is not an error here."""
        with contextlib.suppress(ConnectionLost):
            await self._run("LOGOUT", (), timeout=timeout)
        await self.close()

    # ------------------------------------------------------------------ not authenticated

    async def login(self, user: str, password: str, *, timeout: float | None = None) -> None:
        """LOGIN (RFC 3501 §6.2.3); raises `AuthenticationFailed` on NO."""
        if "LOGINDISABLED" in self._capabilities:
            raise AuthenticationFailed("LOGIN", "NO", "server advertises LOGINDISABLED")
        before = self._caps_seen
        await self._run(
            "LOGIN",
            (astring(user), astring(password)),
            timeout=timeout,
            secret=True,
            failure=AuthenticationFailed,
        )
        await self._refresh_caps(before, timeout)

    async def authenticate_plain(
        self, user: str, password: str, *, authzid: str = "", timeout: float | None = None
    ) -> None:
        """AUTHENTICATE PLAIN (RFC 4616), with the initial response inline under SASL-IR."""
        if "AUTH=PLAIN" not in self._capabilities:
            raise MissingCapability("AUTH=PLAIN")
        token = base64.b64encode(f"{authzid}\0{user}\0{password}".encode())
        if "SASL-IR" in self._capabilities:  # RFC 4959
            segments = [(b" AUTHENTICATE PLAIN " + token + b"\r\n", False)]
        else:
            segments = [(b" AUTHENTICATE PLAIN\r\n", True), (token + b"\r\n", False)]
        before = self._caps_seen
        await self._run_segments(
            "AUTHENTICATE",
            segments,
            _NONE,
            timeout=timeout,
            secret=True,
            failure=AuthenticationFailed,
        )
        await self._refresh_caps(before, timeout)

    async def authenticate_oauth2(
        self,
        user: str,
        token: str,
        *,
        mechanism: sasl.Mechanism | None = None,
        host: str | None = None,
        port: int | None = None,
        timeout: float | None = None,
    ) -> sasl.Mechanism:
        """AUTHENTICATE with an OAuth2 access token: OAUTHBEARER (RFC 7628) or XOAUTH2, whichever the server
        advertises (`sasl.choose`) unless `mechanism` says. Returns the mechanism used; raises
        `MissingCapability` when the server offers neither and `AuthenticationFailed` on NO.

        A refused token gets a challenge (`+ base64 JSON`) instead of a NO: the second segment answers it as
        the mechanism requires, so the server ends with its tagged NO rather than waiting for us."""
        chosen = mechanism or sasl.choose(self._capabilities)
        if chosen is None or f"AUTH={chosen}" not in self._capabilities:
            raise MissingCapability("AUTH=OAUTHBEARER or AUTH=XOAUTH2", "an OAuth2 login")
        first = sasl.encoded_initial_response(chosen, user, token, host=host, port=port)
        abort = sasl.abort_response(chosen) + b"\r\n"
        head = b" AUTHENTICATE " + chosen.encode()
        if "SASL-IR" in self._capabilities:  # RFC 4959: the initial response on the command line
            segments = [(head + b" " + first + b"\r\n", True), (abort, False)]
        else:  # RFC 3501 §6.2.2: an empty challenge first (`+ `), then the response, then maybe the error
            segments = [(head + b"\r\n", True), (first + b"\r\n", True), (abort, False)]
        before = self._caps_seen
        await self._run_segments(
            "AUTHENTICATE", segments, _NONE, timeout=timeout, secret=True, failure=AuthenticationFailed
        )
        await self._refresh_caps(before, timeout)
        return chosen

    async def _refresh_caps(self, before: int, timeout: float | None) -> None:
        # Servers usually put [CAPABILITY ...] in the tagged OK; if not, ask (RFC 3501 §6.2.3
        # lets capabilities change after login).
        if self._caps_seen == before:
            await self.capability(timeout=timeout)

    # ------------------------------------------------------------------ authenticated

    async def enable(self, *capabilities: str, timeout: float | None = None) -> frozenset[str]:
        """ENABLE (RFC 5161); returns what the server says it enabled."""
        if "ENABLE" not in self._capabilities:
            raise MissingCapability("ENABLE")
        words: list[Part] = [c.encode("ascii") for c in capabilities]
        _, untagged = await self._run("ENABLE", words, frozenset({Enabled}), timeout=timeout)
        enabled: set[str] = set()
        for resp in untagged:
            if isinstance(resp, Enabled):
                enabled |= resp.capabilities
        return frozenset(enabled)

    async def list_folders(
        self, reference: str = "", pattern: str = "*", *, timeout: float | None = None
    ) -> list[Mailbox]:
        """LIST; with RFC 6154 SPECIAL-USE and RFC 5258 LIST-EXTENDED, asks for the role flags."""
        parts: list[Part] = [mailbox(reference), mailbox(pattern)]
        if "SPECIAL-USE" in self._capabilities and "LIST-EXTENDED" in self._capabilities:
            parts.append(b"RETURN (SPECIAL-USE)")
        # (without LIST-EXTENDED, RFC 6154 §2 servers still include the flags in plain LIST)
        _, untagged = await self._run("LIST", parts, frozenset({Mailbox}), timeout=timeout)
        return [r for r in untagged if isinstance(r, Mailbox)]

    async def select(
        self,
        name: str | bytes,
        *,
        readonly: bool = False,
        condstore: bool = False,
        qresync: tuple[int, int, UidSet | None] | None = None,
        timeout: float | None = None,
    ) -> SelectedMailbox:
        """SELECT or EXAMINE. `qresync=(uidvalidity, modseq, known_uids)` turns on QRESYNC
        (ENABLEd first if needed, RFC 7162 §3.2.3) and collects VANISHED (EARLIER) and changed
        FETCHes into the result."""
        parts: list[Part] = [mailbox(name)]
        if qresync is not None:
            if "QRESYNC" not in self._enabled:
                if "QRESYNC" not in self._capabilities:
                    raise MissingCapability("QRESYNC", "SELECT (QRESYNC ...)")
                await self.enable("QRESYNC", timeout=timeout)
            uidvalidity, modseq, known = qresync
            text = f"(QRESYNC ({uidvalidity} {modseq}"
            if known is not None:
                text += " " + _uid_set(known)
            parts.append(text.encode() + b"))")
        elif condstore:
            parts.append(b"(CONDSTORE)")  # RFC 7162 §3.1.8
        command = "EXAMINE" if readonly else "SELECT"
        self.selected = None
        status, untagged = await self._run(command, parts, _SELECT, timeout=timeout)
        # RFC 7162 §3.2.11: responses before [CLOSED] belong to the previously selected mailbox.
        for i in range(len(untagged) - 1, -1, -1):
            resp = untagged[i]
            if isinstance(resp, StatusResponse) and resp.code and resp.code.name == "CLOSED":
                untagged = untagged[i + 1 :]
                break
        shown = name if isinstance(name, str) else name.decode("utf-8", "replace")
        box = SelectedMailbox(name=shown, readonly=readonly)
        for resp in [*untagged, status]:
            if isinstance(resp, Exists):
                box.exists = resp.count
            elif isinstance(resp, Flags):
                box.flags = resp.flags
            elif isinstance(resp, Vanished):
                box.vanished.extend(resp.uids)
            elif isinstance(resp, FetchItem):
                box.changed.append(resp)
            elif isinstance(resp, StatusResponse) and resp.code is not None:
                _apply_select_code(box, resp.code.name, resp.code.value)
        self.selected = box
        return box

    async def status(
        self,
        name: str | bytes,
        items: Sequence[str] = ("MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN"),
        *,
        timeout: float | None = None,
    ) -> dict[str, int]:
        """STATUS (RFC 3501 §6.3.10); e.g. `{"MESSAGES": 3, "UIDNEXT": 4}`."""
        wanted = b"(" + " ".join(items).encode("ascii") + b")"
        raw = encode_mailbox(name) if isinstance(name, str) else name
        _, untagged = await self._run(
            "STATUS", [mailbox(raw), wanted], frozenset({MailboxStatus}), timeout=timeout, mailbox=raw
        )
        result: dict[str, int] = {}
        for resp in untagged:
            if isinstance(resp, MailboxStatus):
                result.update(resp.items)
        return result

    async def notify_set(self, *specs: bytes, timeout: float | None = None) -> None:
        """NOTIFY SET (RFC 5465 §3.1), each spec an event group as sent, e.g. `b"(personal (MessageNew))"`. From then
        on the server reports changes of the mailboxes named, also outside IDLE: EXISTS, EXPUNGE and FETCH of the
        selected one, STATUS of the others (§5.2-5.4; Dovecot's carry MESSAGES, UIDNEXT and, with CONDSTORE,
        HIGHESTMODSEQ), LIST of a mailbox created, deleted or renamed (§5.4). They are counted in `notices`. A
        server that cannot watch what is asked answers NO [BADEVENT] (CommandFailed)."""
        if "NOTIFY" not in self._capabilities:
            raise MissingCapability("NOTIFY")
        await self._run("NOTIFY SET", specs, timeout=timeout)

    async def create(self, name: str | bytes, *, timeout: float | None = None) -> None:
        await self._run("CREATE", [mailbox(name)], timeout=timeout)

    async def delete(self, name: str | bytes, *, timeout: float | None = None) -> None:
        await self._run("DELETE", [mailbox(name)], timeout=timeout)

    async def rename(self, old: str | bytes, new: str | bytes, *, timeout: float | None = None) -> None:
        await self._run("RENAME", [mailbox(old), mailbox(new)], timeout=timeout)

    async def subscribe(self, name: str | bytes, *, timeout: float | None = None) -> None:
        await self._run("SUBSCRIBE", [mailbox(name)], timeout=timeout)

    async def unsubscribe(self, name: str | bytes, *, timeout: float | None = None) -> None:
        await self._run("UNSUBSCRIBE", [mailbox(name)], timeout=timeout)

    async def append(
        self,
        name: str | bytes,
        data: bytes,
        flags: Iterable[str] = (),
        date: datetime | None = None,
        *,
        timeout: float | None = None,
    ) -> tuple[int, int] | None:
        """APPEND a message; returns (uidvalidity, uid) when the server has UIDPLUS (RFC 4315).

        Sent as a non-synchronizing literal under LITERAL+ (RFC 7888), else after the server's
        continuation. A message holding NUL goes as RFC 3516 literal8 when BINARY is offered.
        """
        parts: list[Part] = [mailbox(name)]
        flag_list = _flags(flags)
        if flag_list:
            parts.append(b"(" + b" ".join(flag_list) + b")")
        if date is not None:
            parts.append(quoted(_format_date(date)))
        binary = b"\0" in data and "BINARY" in self._capabilities
        parts.append(Literal(data, binary=binary))
        status, _ = await self._run("APPEND", parts, timeout=timeout)
        if status.code is not None and isinstance(status.code.value, AppendUid):
            value = status.code.value
            return value.uidvalidity, value.uids[0]
        return None

    # ------------------------------------------------------------------ selected

    async def uid_search(
        self,
        criteria: str | Sequence[Part],
        *,
        charset: str | None = None,
        timeout: float | None = None,
    ) -> list[int]:
        """UID SEARCH; `criteria` is IMAP search syntax (a string sent as is, or parts so that
        strings can be quoted with `astring`). Uses ESEARCH `RETURN (ALL)` when offered."""
        parts: list[Part] = []
        if "ESEARCH" in self._capabilities:
            parts.append(b"RETURN (ALL)")  # RFC 4731 §3.1: a compact uid set, not one number each
        if charset is not None:
            parts.append(b"CHARSET " + charset.encode("ascii"))
        if isinstance(criteria, str):
            parts.append(criteria.encode("utf-8"))
        else:
            parts.extend(criteria)
        if "ESEARCH" in self._capabilities:
            _, untagged = await self._run("UID SEARCH", parts, _SEARCH, timeout=timeout)
        else:
            # A plain `* SEARCH` names no command, and Dovecot runs pipelined searches in
            # parallel: one at a time keeps each answer with its question.
            async with self._search_lock:
                _, untagged = await self._run("UID SEARCH", parts, _SEARCH, timeout=timeout)
        found: list[int] = []
        for resp in untagged:
            if isinstance(resp, ESearch | Search):
                found.extend(resp.all if isinstance(resp, ESearch) else resp.numbers)
        return sorted(set(found))

    async def uid_fetch(
        self,
        uids: UidSet,
        items: str,
        *,
        changedsince: int | None = None,
        vanished: bool = False,
        timeout: float | None = None,
    ) -> FetchResult:
        """UID FETCH. `items` is the item list (`"UID FLAGS BODY.PEEK[]"`, parentheses optional).

        `changedsince` adds RFC 7162 §3.1.4's CHANGEDSINCE; `vanished` adds §3.2.6's VANISHED
        (QRESYNC must be enabled: it is enabled here if needed), whose UIDs come back in
        `FetchResult.vanished`.
        """
        text = items.strip()
        if not text.startswith("("):
            text = f"({text})"
        uid_text = _uid_set(uids)
        parts: list[Part] = [uid_text.encode(), text.encode("ascii")]
        if vanished:
            if changedsince is None:
                raise ValueError("VANISHED needs CHANGEDSINCE (RFC 7162 §3.2.6)")
            if "QRESYNC" not in self._enabled:
                if "QRESYNC" not in self._capabilities:
                    raise MissingCapability("QRESYNC", "UID FETCH (VANISHED)")
                await self.enable("QRESYNC", timeout=timeout)
        if changedsince is not None:
            modifier = f"(CHANGEDSINCE {changedsince}{' VANISHED' if vanished else ''})"
            parts.append(modifier.encode())
        _, untagged = await self._run("UID FETCH", parts, _FETCH, timeout=timeout, uids=uid_text)
        result = FetchResult([], [])
        for resp in untagged:
            if isinstance(resp, FetchItem):
                result.items.append(resp)
            elif isinstance(resp, Vanished) and resp.earlier:
                result.vanished.extend(resp.uids)
        return result

    async def fetch(self, first: int, last: int, items: str, *, timeout: float | None = None) -> FetchResult:
        """FETCH by message sequence numbers `first:last` (RFC 3501 §6.4.5), e.g. the newest messages of the
        selected mailbox (`exists - n + 1` to `exists`) before any UID is known. Ask for UID among the items:
        a sequence number holds only until the next expunge."""
        text = items.strip()
        if not text.startswith("("):
            text = f"({text})"
        if not 1 <= first <= last:
            raise ValueError(f"not a sequence range: {first}:{last}")
        parts: list[Part] = [f"{first}:{last}".encode(), text.encode("ascii")]
        _, untagged = await self._run("FETCH", parts, _FETCH, timeout=timeout)
        return FetchResult([r for r in untagged if isinstance(r, FetchItem)], [])

    async def uid_store(
        self,
        uids: UidSet,
        action: StoreAction,
        flags: Iterable[str],
        *,
        silent: bool = True,
        unchangedsince: int | None = None,
        timeout: float | None = None,
    ) -> StoreResult:
        """UID STORE: add, remove or set flags. With `unchangedsince` (RFC 7162 §3.1.3) the UIDs
        changed since that modseq are left alone and returned in `StoreResult.modified`."""
        uid_text = _uid_set(uids)
        parts: list[Part] = [uid_text.encode()]
        if unchangedsince is not None:
            parts.append(b"(UNCHANGEDSINCE %d)" % unchangedsince)
        parts.append(_STORE_ITEM[action] + (b".SILENT" if silent else b""))
        parts.append(b"(" + b" ".join(_flags(flags)) + b")")
        status, untagged = await self._run("UID STORE", parts, _FETCH, timeout=timeout, uids=uid_text)
        modified: list[int] = []
        if status.code is not None and status.code.name == "MODIFIED":
            value = status.code.value
            if isinstance(value, tuple):
                modified = [int(v) for v in value]
        return StoreResult([r for r in untagged if isinstance(r, FetchItem)], modified)

    async def uid_store_labels(
        self, uids: UidSet, action: StoreAction, labels: Iterable[str], *, timeout: float | None = None
    ) -> StoreResult:
        """Gmail's UID STORE [+|-]X-GM-LABELS (developers.google.com/gmail/imap/imap-extensions): a system label
        (\\Inbox, \\Starred, ...) goes as the atom it is, any other as a mailbox name (modified UTF-7)."""
        items: list[bytes] = []
        for label in labels:
            part = label.encode("ascii") if label.startswith("\\") and label[1:].isalnum() else mailbox(label)
            if not isinstance(part, bytes):
                raise ValueError(f"not a label that can be sent: {label!r}")
            items.append(part)
        uid_text = _uid_set(uids)
        item = {"add": b"+X-GM-LABELS", "remove": b"-X-GM-LABELS", "set": b"X-GM-LABELS"}[action]
        parts: list[Part] = [uid_text.encode(), item, b"(" + b" ".join(items) + b")"]
        _, untagged = await self._run("UID STORE", parts, _FETCH, timeout=timeout, uids=uid_text)
        return StoreResult([r for r in untagged if isinstance(r, FetchItem)], [])

    async def uid_copy(self, uids: UidSet, destination: str | bytes, *, timeout: float | None = None) -> CopyUid | None:
        """UID COPY; returns the COPYUID mapping when the server has UIDPLUS (RFC 4315 §3)."""
        parts = [_uid_set(uids).encode(), mailbox(destination)]
        status, _ = await self._run("UID COPY", parts, timeout=timeout)
        return _copyuid([status])

    async def uid_move(self, uids: UidSet, destination: str | bytes, *, timeout: float | None = None) -> CopyUid | None:
        """UID MOVE (RFC 6851); without MOVE, COPY + STORE \\Deleted + UID EXPUNGE (UIDPLUS)."""
        uid_text = _uid_set(uids)
        if "MOVE" in self._capabilities:
            parts = [uid_text.encode(), mailbox(destination)]
            status, untagged = await self._run("UID MOVE", parts, _MOVE, timeout=timeout, uids=uid_text)
            # RFC 6851 §4.3: COPYUID arrives in an untagged OK before the expunges
            return _copyuid([*untagged, status])
        if "UIDPLUS" not in self._capabilities:
            # a plain EXPUNGE would also remove other messages marked \Deleted
            raise MissingCapability("MOVE or UIDPLUS", "moving messages safely")
        copied = await self.uid_copy(uid_text, destination, timeout=timeout)
        await self.uid_store(uid_text, "add", ["\\Deleted"], timeout=timeout)
        await self.uid_expunge(uid_text, timeout=timeout)
        return copied

    async def uid_expunge(self, uids: UidSet, *, timeout: float | None = None) -> None:
        """UID EXPUNGE (RFC 4315 §2.1): remove only these UIDs' \\Deleted messages."""
        if "UIDPLUS" not in self._capabilities:
            raise MissingCapability("UIDPLUS", "UID EXPUNGE")
        await self._run("UID EXPUNGE", [_uid_set(uids).encode()], _EXPUNGING, timeout=timeout)

    async def expunge(self, *, timeout: float | None = None) -> None:
        await self._run("EXPUNGE", (), _EXPUNGING, timeout=timeout)

    async def close_mailbox(self, *, timeout: float | None = None) -> None:
        """IMAP CLOSE (RFC 3501 §6.4.2): expunge silently and leave the selected state."""
        await self._run("CLOSE", (), _EXPUNGING, timeout=timeout)
        self.selected = None

    async def unselect(self, *, timeout: float | None = None) -> None:
        """UNSELECT (RFC 3691): leave the selected state without expunging."""
        if "UNSELECT" not in self._capabilities:
            raise MissingCapability("UNSELECT")
        await self._run("UNSELECT", (), timeout=timeout)
        self.selected = None

    # ------------------------------------------------------------------ IDLE

    async def idle_start(self, *, timeout: float | None = None) -> None:
        """Send IDLE and wait for the server's `+` (RFC 2177). Re-issue before 29 minutes."""
        if "IDLE" not in self._capabilities:
            raise MissingCapability("IDLE")
        limit = self.timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):
                cmd = await self._send("IDLE", [(b" IDLE\r\n", True)], _IDLE, idle=True)
        except TimeoutError:
            raise ImapTimeout(f"IDLE not accepted within {limit} s") from None
        if self._idle is None:  # answered with a tagged status instead of "+"
            status = cmd.future.result()
            raise CommandFailed("IDLE", status.status, status.text, status.code)

    async def wait_push(self, timeout: float) -> list[Untagged]:
        """Wait up to `timeout` s for the server to report changes while idling; [] if none.

        Returns EXISTS / EXPUNGE / FETCH / VANISHED / RECENT and other untagged responses, minus
        bare `* OK` keepalives. Raises `ConnectionLost` if the connection drops.
        """
        cmd = self._idle
        if cmd is None or cmd.event is None:
            raise RuntimeError("not idling: call idle_start() first")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            items = [r for r in cmd.untagged if not _keepalive(r)]
            cmd.untagged.clear()
            if items:
                return items
            if cmd.future.done():
                self._idle = None
                status = cmd.future.result()  # raises ConnectionLost / ProtocolError
                raise CommandFailed("IDLE", status.status, f"server ended IDLE: {status.text}")
            cmd.event.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            try:
                async with asyncio.timeout(remaining):
                    await cmd.event.wait()
            except TimeoutError:
                return []

    async def idle_done(self, *, timeout: float | None = None) -> list[Untagged]:
        """End IDLE with DONE; returns untagged responses not yet taken by `wait_push`."""
        cmd = self._idle
        if cmd is None:
            raise RuntimeError("not idling")
        self._idle = None
        limit = self.timeout if timeout is None else timeout
        assert self._writer is not None
        try:
            if not cmd.future.done():
                self._writer.write(b"DONE\r\n")
            async with asyncio.timeout(limit):
                status = await cmd.future
        except TimeoutError:
            # The server did not end IDLE: the connection cannot be trusted for other commands.
            self._fail_all(ImapTimeout("IDLE did not end after DONE"))
            self._abort_transport()
            raise ImapTimeout(f"IDLE did not end within {limit} s after DONE") from None
        except OSError as exc:
            raise ConnectionLost(f"connection broke ending IDLE: {exc}") from exc
        if status.status != "OK":
            raise CommandFailed("IDLE", status.status, status.text, status.code)
        return [r for r in cmd.untagged if not _keepalive(r)]

    @contextlib.asynccontextmanager
    async def idle(self, *, timeout: float | None = None) -> AsyncIterator[IdleEvents]:
        """`async with client.idle() as events: batch = await events.next(60)`; DONE on exit."""
        await self.idle_start(timeout=timeout)
        try:
            yield IdleEvents(self)
        finally:
            if self._idle is not None and self._lost is None:
                await self.idle_done(timeout=timeout)
            self._idle = None


class IdleEvents:
    """What `ImapClient.idle()` yields: `await events.next(timeout)` -> list of responses."""

    def __init__(self, client: ImapClient) -> None:
        self._client = client

    async def next(self, timeout: float) -> list[Untagged]:
        return await self._client.wait_push(timeout)


def _keepalive(resp: Untagged) -> bool:
    # Dovecot sends "* OK Still here" every couple of minutes during IDLE.
    return isinstance(resp, StatusResponse) and resp.status == "OK" and resp.code is None


def _apply_select_code(box: SelectedMailbox, name: str, value: object) -> None:
    if name == "UIDVALIDITY" and isinstance(value, int):
        box.uidvalidity = value
    elif name == "UIDNEXT" and isinstance(value, int):
        box.uidnext = value
    elif name == "HIGHESTMODSEQ" and isinstance(value, int):
        box.highestmodseq = value
    elif name == "NOMODSEQ":  # RFC 7162 §3.1.2.2: the mailbox has no mod-sequences
        box.highestmodseq = None
    elif name == "PERMANENTFLAGS" and isinstance(value, tuple):
        box.permanentflags = tuple(str(v) for v in value)
    elif name == "READ-ONLY":
        box.readonly = True
    elif name == "READ-WRITE":
        box.readonly = False


def _copyuid(responses: Iterable[Untagged]) -> CopyUid | None:
    for resp in responses:
        if isinstance(resp, StatusResponse) and resp.code and isinstance(resp.code.value, CopyUid):
            return resp.code.value
    return None


def _uid_set(uids: UidSet) -> str:
    return uids if isinstance(uids, str) else format_uid_set(uids)


def _flags(flags: Iterable[str]) -> list[bytes]:
    out = []
    for flag in flags:
        if not _FLAG.match(flag):
            raise ValueError(f"not a valid IMAP flag: {flag!r}")
        out.append(flag.encode("ascii"))
    return out


def _format_date(date: datetime) -> bytes:
    # RFC 3501 §9 date-time: "dd-Mon-yyyy hh:mm:ss +zzzz"; a naive datetime is taken as UTC.
    offset = date.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return (
        f"{date.day:02d}-{_MONTHS[date.month - 1]}-{date.year:04d} "
        f"{date.hour:02d}:{date.minute:02d}:{date.second:02d} {sign}{minutes // 60:02d}{minutes % 60:02d}"
    ).encode("ascii")
