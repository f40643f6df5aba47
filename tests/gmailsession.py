"""One client connection of tests/gmailserver.py: the IMAP commands, by state (RFC 3501 §6), on Gmail's model."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from tests.gmailstore import SYSTEM, Box, Mail
from tests.gmailwire import CAPS, FLAGS, ITEMS, Bad, No, Token, astring, internaldate, parse_set, text, tokenize, words

if TYPE_CHECKING:
    from tests.gmailserver import GmailServer


class Session:
    def __init__(self, server: GmailServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.store = server.store
        self.reader = reader
        self.writer = writer
        self.user: str | None = None
        self.box: Box | None = None
        self.readonly = False
        self.view: list[int] = []  # UIDs by sequence number, as this session was told
        self.seen: dict[int, int] = {}  # UID -> the MODSEQ this session was last told of
        self.condstore = False

    # -- io ---------------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        self.store.stats.sent_bytes += len(data)
        self.writer.write(data)

    def line(self, data: bytes) -> None:
        self.send(data + b"\r\n")

    async def read_command(self) -> bytes | None:
        buf = bytearray()
        while True:
            line = await self.reader.readline()
            if not line:
                return None
            buf += line
            m = re.search(rb"\{(\d+)(\+?)\}\r\n$", line)
            if m is None:
                return bytes(buf)
            if not m.group(2):
                self.line(b"+ go ahead")
                await self.writer.drain()
            buf += await self.reader.readexactly(int(m.group(1)))

    async def serve(self) -> None:
        self.line(b"* OK [CAPABILITY " + CAPS.encode() + b"] Gimap ready for requests (inboxql test server)")
        try:
            while (data := await self.read_command()) is not None:
                parts = data.split(b" ", 2)
                if len(parts) < 2:
                    self.line(b"* BAD empty command")
                    continue
                tag, name = parts[0], parts[1].strip().upper()
                rest = parts[2] if len(parts) > 2 else b""
                if name == b"UID":
                    sub = rest.split(b" ", 1)
                    name, rest = b"UID " + sub[0].strip().upper(), sub[1] if len(sub) > 1 else b""
                try:
                    done = await self.run(tag, name.decode(), tokenize(rest))
                except Bad as exc:
                    self.line(tag + b" BAD " + str(exc).encode())
                except No as exc:
                    self.line(tag + b" NO " + str(exc).encode())
                else:
                    self.line(tag + b" OK " + done.encode())
                await self.writer.drain()
                if name == b"LOGOUT":
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.writer.close()

    # -- dispatch -----------------------------------------------------------------------------------
    async def run(self, tag: bytes, name: str, args: list[Token]) -> str:
        if name == "CAPABILITY":
            self.line(b"* CAPABILITY " + self.server.caps.encode())
            return "Success"
        if name == "NOOP":
            self.flush()
            return "Success"
        if name == "LOGOUT":
            self.line(b"* BYE LOGOUT Requested")
            return "73 GoodBye"
        if name == "ID":
            self.line(b'* ID ("name" "GImap" "vendor" "inboxql tests")')
            return "Success"
        if name == "LOGIN":
            user, password = text(args[0]), text(args[1])
            if self.server.users.get(user) != password:
                raise No("[AUTHENTICATIONFAILED] Invalid credentials (Failure)")
            self.user = user
            return f"[CAPABILITY {self.server.caps}] {user} authenticated (Success)"
        if self.user is None:
            raise Bad("Command not allowed now")
        handler = getattr(self, "do_" + name.replace(" ", "_").lower(), None)
        if handler is None:
            raise Bad(f"Unknown command {name}")
        result: str = await handler(args) if asyncio.iscoroutinefunction(handler) else handler(args)
        if name.startswith("UID ") or name in ("EXPUNGE", "MOVE", "CHECK"):
            self.flush()
        return result

    def do_enable(self, args: list[Token]) -> str:
        wanted = {text(a).upper() for a in args}
        if "CONDSTORE" in wanted:
            self.condstore = True
            self.line(b"* ENABLED CONDSTORE")
        else:
            self.line(b"* ENABLED")
        return "Success"

    def do_namespace(self, args: list[Token]) -> str:
        self.line(b'* NAMESPACE (("" "/")) NIL NIL')
        return "Success"

    def do_list(self, args: list[Token]) -> str:
        if args and isinstance(args[0], list):
            args = args[1:]  # selection options: every LIST carries the special-use attributes anyway
        pattern = text(args[1])
        rx = re.compile("^" + re.escape(text(args[0]) + pattern).replace(r"\*", ".*").replace("%", "[^/]*") + "$")
        names = sorted(self.server.folder_names())
        if any(n.startswith("[Gmail]/") for n in names) and rx.match("[Gmail]"):
            self.line(b'* LIST (\\HasChildren \\Noselect) "/" "[Gmail]"')
        for name in names:
            if not rx.match(name):
                continue
            attrs = ["\\HasNoChildren"]
            special = self.server.special(name)
            if special:
                attrs.append(special)
            self.line(b"* LIST (" + " ".join(attrs).encode() + b') "/" ' + astring(name))
        return "Success"

    def do_lsub(self, args: list[Token]) -> str:
        return "Success"

    def do_subscribe(self, args: list[Token]) -> str:
        return "Success"

    do_unsubscribe = do_subscribe

    def do_create(self, args: list[Token]) -> str:
        name = text(args[0]).rstrip("/")
        if name in self.server.folder_names():
            raise No("[ALREADYEXISTS] Folder name conflicts with existing folder name.")
        self.server.create(name)
        return "Success"

    def do_delete(self, args: list[Token]) -> str:
        name = text(args[0])
        if name in SYSTEM or name not in self.server.folder_names():
            raise No("[CANNOT] Folder name not allowed")
        self.server.delete(name)
        return "Success"

    def do_rename(self, args: list[Token]) -> str:
        old, new = text(args[0]), text(args[1])
        if old in SYSTEM or old not in self.server.folder_names():
            raise No("[CANNOT] Folder name not allowed")
        self.server.rename(old, new)
        return "Success"

    def do_status(self, args: list[Token]) -> str:
        box = self.server.box(text(args[0]))
        items = [w.upper() for w in words(args[1])]
        values = {
            "MESSAGES": len(box.uids),
            "UIDNEXT": box.uidnext,
            "UIDVALIDITY": box.uidvalidity,
            "UNSEEN": sum(1 for m in box.uids if "\\Seen" not in self.store.mails[m].flags),
            "RECENT": 0,
            "HIGHESTMODSEQ": box.highestmodseq,
        }
        shown = " ".join(f"{i} {values[i]}" for i in items if i in values)
        self.line(b"* STATUS " + astring(box.name) + b" (" + shown.encode() + b")")
        return "Success"

    def do_select(self, args: list[Token], readonly: bool = False) -> str:
        self.box = None
        box = self.server.box(text(args[0]))
        if len(args) > 1 and "CONDSTORE" in [w.upper() for w in words(args[1])]:
            self.condstore = True
        self.box, self.readonly = box, readonly
        self.view = sorted(box.uids.values())
        self.seen = {uid: self.store.mails[m].modseq for m, uid in box.uids.items()}
        self.line(b"* FLAGS (" + FLAGS.encode() + b")")
        self.line(b"* OK [PERMANENTFLAGS (" + FLAGS.encode() + b" \\*)] Flags permitted.")
        self.line(b"* OK [UIDVALIDITY %d] UIDs valid." % box.uidvalidity)
        self.line(b"* %d EXISTS" % len(self.view))
        self.line(b"* 0 RECENT")
        self.line(b"* OK [UIDNEXT %d] Predicted next UID." % box.uidnext)
        self.line(b"* OK [HIGHESTMODSEQ %d]" % box.highestmodseq)
        return f"[{'READ-ONLY' if readonly else 'READ-WRITE'}] {box.name} selected. (Success)"

    def do_examine(self, args: list[Token]) -> str:
        return self.do_select(args, readonly=True)

    def do_close(self, args: list[Token]) -> str:
        if self.box is not None and not self.readonly:
            self._expunge(None, quiet=True)
        self.box = None
        return "Returned to authenticated state. (Success)"

    def do_unselect(self, args: list[Token]) -> str:
        self.box = None
        return "Returned to authenticated state. (Success)"

    def do_append(self, args: list[Token]) -> str:
        box = self.server.box(text(args[0]))
        flags: list[str] = []
        when: datetime | None = None
        rest = args[1:]
        if rest and isinstance(rest[0], list):
            flags = words(rest[0])
            rest = rest[1:]
        if len(rest) > 1:
            when = datetime.strptime(text(rest[0]), "%d-%b-%Y %H:%M:%S %z")
            rest = rest[1:]
        raw = rest[0]
        if not isinstance(raw, bytes):
            raise Bad("APPEND needs a message")
        uid = self.server.append(box, raw, flags, when)
        return f"[APPENDUID {box.uidvalidity} {uid}] (Success)"

    # -- selected state ---------------------------------------------------------------------------
    def selected(self) -> Box:
        if self.box is None:
            raise Bad("No mailbox selected")
        if self.box.name not in self.store.boxes:
            raise No("[NONEXISTENT] mailbox gone")
        return self.box

    def targets(self, spec: Token, by_uid: bool) -> list[tuple[int, int, Mail]]:
        """(sequence number, UID, message) of a set, in this session's view."""
        box = self.selected()
        by = box.by_uid()
        if by_uid:
            top = max(self.view, default=0)
            wanted = parse_set(text(spec), top)
            # RFC 3501 §6.4.8: `n:*` holds the highest UID even when n is above it.
            if text(spec).endswith(":*") and self.view:
                wanted.add(top)
            return [
                (i + 1, uid, self.store.mails[by[uid]])
                for i, uid in enumerate(self.view)
                if uid in wanted and uid in by
            ]
        numbers = parse_set(text(spec), len(self.view))
        return [
            (n, self.view[n - 1], self.store.mails[by[self.view[n - 1]]])
            for n in sorted(numbers)
            if 1 <= n <= len(self.view) and self.view[n - 1] in by
        ]

    def do_fetch(self, args: list[Token], by_uid: bool = False) -> str:
        items = [w.upper() for w in words(args[1])] if isinstance(args[1], list) else [text(args[1]).upper()]
        items = {"ALL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE"], "FAST": ["FLAGS", "INTERNALDATE", "RFC822.SIZE"]}.get(
            items[0], items
        )
        since: int | None = None
        if len(args) > 2 and isinstance(args[2], list):
            mods = words(args[2])
            if mods and mods[0].upper() == "CHANGEDSINCE":
                since = int(mods[1])
                self.condstore = True
                self.store.stats.changedsince += 1
        if by_uid and "UID" not in items:
            items.insert(0, "UID")
        if since is not None and "MODSEQ" not in items:
            items.append("MODSEQ")
        for item in items:
            if item.startswith("X-GM-") and not self.server.gmail:
                raise Bad(f"Could not parse command: unknown item {item}")
            if item not in ITEMS and not item.startswith(("BODY[", "BODY.PEEK[")):
                raise Bad(f"Could not parse command: unknown item {item}")
        box = self.selected()
        for seq, uid, mail in self.targets(args[0], by_uid):
            if since is not None and mail.modseq <= since:
                continue
            self.line(b"* %d FETCH (" % seq + self.render(box, uid, mail, items) + b")")
            self.seen[uid] = mail.modseq
        return "Success"

    def do_uid_fetch(self, args: list[Token]) -> str:
        return self.do_fetch(args, by_uid=True)

    def render(self, box: Box, uid: int, mail: Mail, items: Sequence[str]) -> bytes:
        out: list[bytes] = []
        for item in items:
            if item == "UID":
                out.append(b"UID %d" % uid)
            elif item == "FLAGS":
                out.append(b"FLAGS (" + " ".join(self.server.flags_in(box, mail)).encode() + b")")
            elif item == "INTERNALDATE":
                out.append(b"INTERNALDATE " + internaldate(mail.internaldate))
            elif item == "RFC822.SIZE":
                out.append(b"RFC822.SIZE %d" % len(mail.raw))
            elif item == "MODSEQ":
                out.append(b"MODSEQ (%d)" % mail.modseq)
            elif item == "X-GM-MSGID":
                out.append(b"X-GM-MSGID %d" % mail.msgid)
            elif item == "X-GM-THRID":
                out.append(b"X-GM-THRID %d" % mail.thrid)
            elif item == "X-GM-LABELS":
                out.append(b"X-GM-LABELS (" + b" ".join(astring(lb) for lb in mail.gm_labels()) + b")")
            else:
                name, data = self._section(item, mail)
                if not item.startswith("BODY.PEEK") and not self.readonly and "\\Seen" not in mail.flags:
                    self.store.change_flags(mail, box, "+", ["\\Seen"])
                out.append(name.encode() + b" {%d}\r\n" % len(data) + data)
                if data is mail.raw:
                    self.store.stats.body_bytes += len(data)
                    self.store.stats.bodies += 1
        return b" ".join(out)

    def _section(self, item: str, mail: Mail) -> tuple[str, bytes]:
        section = item[item.index("[") + 1 : item.rindex("]")] if "[" in item else ""
        name = "RFC822" if item == "RFC822" else "BODY[" + section + "]"
        if section == "" or item == "RFC822":
            return name, mail.raw
        head, _, _ = mail.raw.partition(b"\r\n\r\n")
        if section in ("HEADER", "MIME"):
            return name, head + b"\r\n\r\n"
        if section.startswith("HEADER.FIELDS"):
            wanted = {w.upper() for w in section[section.index("(") + 1 : section.rindex(")")].split()}
            lines = re.split(rb"\r\n(?![ \t])", head)
            kept = [ln for ln in lines if ln.split(b":", 1)[0].strip().decode(errors="replace").upper() in wanted]
            return name, b"".join(ln + b"\r\n" for ln in kept) + b"\r\n"
        if section == "TEXT":
            return name, mail.raw.partition(b"\r\n\r\n")[2]
        raise Bad(f"unsupported section {section}")

    def do_store(self, args: list[Token], by_uid: bool = False) -> str:
        box = self.selected()
        if self.readonly:
            raise No("[READ-ONLY] mailbox is read-only")
        rest = args[1:]
        unchanged: int | None = None
        if isinstance(rest[0], list):
            mods = words(rest[0])
            unchanged = int(mods[1]) if mods and mods[0].upper() == "UNCHANGEDSINCE" else None
            rest = rest[1:]
        item = text(rest[0]).upper()
        values = words(rest[1])
        silent = item.endswith(".SILENT")
        item = item.removesuffix(".SILENT")
        op = item[0] if item[0] in "+-" else ""
        what = item.lstrip("+-")
        if what not in ("FLAGS", "X-GM-LABELS") or (what == "X-GM-LABELS" and not self.server.gmail):
            raise Bad(f"Could not parse command: {item}")
        refused: list[int] = []
        for seq, uid, mail in self.targets(args[0], by_uid):
            if unchanged is not None and mail.modseq > unchanged:
                refused.append(uid if by_uid else seq)
                continue
            if what == "FLAGS":
                self.store.change_flags(mail, box, op, values)
            else:
                self.store.change_labels(mail, op, values)
            if mail.msgid in box.uids and not silent:
                shown = ["UID", "FLAGS"] if what == "FLAGS" else ["UID", "X-GM-LABELS"]
                if self.condstore:
                    shown.append("MODSEQ")
                self.line(b"* %d FETCH (" % seq + self.render(box, uid, mail, shown) + b")")
                self.seen[uid] = mail.modseq
        if refused:
            return f"[MODIFIED {','.join(map(str, refused))}] Conditional STORE failed"
        return "Success"

    def do_uid_store(self, args: list[Token]) -> str:
        return self.do_store(args, by_uid=True)

    def do_copy(self, args: list[Token], by_uid: bool = False, move: bool = False) -> str:
        box = self.selected()
        dest = self.server.box(text(args[1]))
        pairs: list[tuple[int, int]] = []
        for _seq, uid, mail in self.targets(args[0], by_uid):
            pairs.append((uid, self.store.copy_to(mail, dest)))
            if move and dest is not box:
                self.store.remove_from(mail, box, moving_to=dest)
        if not pairs:
            return "No messages (Success)"
        code = f"COPYUID {dest.uidvalidity} {','.join(str(a) for a, _ in pairs)} {','.join(str(b) for _, b in pairs)}"
        if move:
            self.line(f"* OK [{code}]".encode())
            self.flush()
            return "Success"
        return f"[{code}] (Success)"

    def do_uid_copy(self, args: list[Token]) -> str:
        return self.do_copy(args, by_uid=True)

    def do_move(self, args: list[Token]) -> str:
        return self.do_copy(args, move=True)

    def do_uid_move(self, args: list[Token]) -> str:
        return self.do_copy(args, by_uid=True, move=True)

    def do_expunge(self, args: list[Token]) -> str:
        self.selected()
        self._expunge(None)
        return "Success"

    def do_uid_expunge(self, args: list[Token]) -> str:
        self.selected()
        self._expunge(parse_set(text(args[0]), max(self.view, default=0)))
        return "Success"

    def _expunge(self, uids: set[int] | None, quiet: bool = False) -> None:
        box = self.selected()
        by = box.by_uid()
        for uid in sorted(by):
            msgid = by[uid]
            if msgid in box.deleted and (uids is None or uid in uids):
                self.store.remove_from(self.store.mails[msgid], box)
        if not quiet:
            self.flush()

    def do_check(self, args: list[Token]) -> str:
        return "Success"

    def do_search(self, args: list[Token], by_uid: bool = False) -> str:
        box = self.selected()
        by = box.by_uid()
        found: list[int] = []
        for i, uid in enumerate(self.view):
            mail = self.store.mails.get(by.get(uid, -1))
            if mail is not None and self._matches(box, uid, mail, list(args)):
                found.append(uid if by_uid else i + 1)
        self.line(b"* SEARCH" + b"".join(b" %d" % n for n in found))
        return "SEARCH completed (Success)"

    def do_uid_search(self, args: list[Token]) -> str:
        return self.do_search(args, by_uid=True)

    def _matches(self, box: Box, uid: int, mail: Mail, keys: list[Token]) -> bool:
        while keys:
            key = keys.pop(0)
            if isinstance(key, list):
                if not self._matches(box, uid, mail, list(key)):
                    return False
                continue
            word = text(key).upper()
            flags = self.server.flags_in(box, mail)
            if word == "ALL":
                continue
            if word == "UID":
                if uid not in parse_set(text(keys.pop(0)), max(self.view, default=0)):
                    return False
            elif word == "X-GM-MSGID":
                if mail.msgid != int(text(keys.pop(0))):
                    return False
            elif word == "X-GM-THRID":
                if mail.thrid != int(text(keys.pop(0))):
                    return False
            elif word == "X-GM-LABELS":
                if text(keys.pop(0)) not in mail.gm_labels():
                    return False
            elif word == "HEADER":
                field, value = text(keys.pop(0)), text(keys.pop(0))
                head = mail.raw.partition(b"\r\n\r\n")[0].decode(errors="replace")
                hit = re.search(rf"(?im)^{re.escape(field)}:[^\r\n]*{re.escape(value)}", head)
                if hit is None:
                    return False
            elif word in ("DELETED", "SEEN", "FLAGGED", "ANSWERED", "DRAFT"):
                if "\\" + word.title() not in flags:
                    return False
            elif word in ("UNDELETED", "UNSEEN", "UNFLAGGED", "UNANSWERED", "UNDRAFT"):
                if "\\" + word[2:].title() in flags:
                    return False
            elif word == "CHARSET":
                keys.pop(0)
            else:
                raise Bad(f"Could not parse command: search key {word}")
        return True

    async def do_idle(self, args: list[Token]) -> str:
        self.selected()
        self.line(b"+ idling")
        self.flush()
        await self.writer.drain()
        done = asyncio.ensure_future(self.reader.readline())
        try:
            while not done.done():
                # The condition's lock is taken and given back inside the waiter's own task: taken here around
                # it, a waiter cancelled after it had let the lock go left this task releasing a lock no one
                # held, and the DONE went unanswered (a client waited out its timeout, about half the runs).
                waiter = asyncio.ensure_future(self._next_change())
                await asyncio.wait({done, waiter}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                await asyncio.gather(waiter, return_exceptions=True)
                self.flush()
                await self.writer.drain()
        finally:
            if not done.done():
                done.cancel()
        if done.result().strip().upper() != b"DONE":
            raise Bad("expected DONE")
        return "IDLE terminated (Success)"

    async def _next_change(self) -> None:
        async with self.store.changes:
            await self.store.changes.wait()

    # -- what changed, told to this session ---------------------------------------------------------
    def flush(self) -> None:
        box = self.box
        if box is None or box.name not in self.store.boxes:
            return
        current = box.by_uid()
        for i in range(len(self.view) - 1, -1, -1):
            uid = self.view[i]
            if uid not in current:
                self.line(b"* %d EXPUNGE" % (i + 1))
                del self.view[i]
                self.seen.pop(uid, None)
        shown = set(self.view)
        new = sorted(uid for uid in current if uid not in shown)
        items = (
            ["UID", "FLAGS"] + (["X-GM-LABELS"] if self.server.gmail else []) + (["MODSEQ"] if self.condstore else [])
        )
        for i, uid in enumerate(self.view):
            mail = self.store.mails[current[uid]]
            if self.seen.get(uid) != mail.modseq:
                self.line(b"* %d FETCH (" % (i + 1) + self.render(box, uid, mail, items) + b")")
                self.seen[uid] = mail.modseq
        if new:
            self.view.extend(new)
            for uid in new:
                self.seen[uid] = self.store.mails[current[uid]].modseq
            self.line(b"* %d EXISTS" % len(self.view))
