"""The mailbox model behind tests/gmailserver.py: Gmail's, as Google documents it for IMAP.

A message is stored once and carries labels (X-GM-LABELS); the IMAP folders are views computed from them:

    [Gmail]/All Mail   every message but those in Trash and Spam
    INBOX              carries \\Inbox          [Gmail]/Sent Mail   \\Sent
    [Gmail]/Drafts     \\Draft                  [Gmail]/Important   \\Important
    [Gmail]/Starred    the \\Flagged flag (X-GM-LABELS reports it as \\Starred)
    [Gmail]/Trash, [Gmail]/Spam: apart from All Mail (a message is in All Mail, Trash or Spam, never two)
    any other folder   the user label of its name

A message entering a view gets that view's next UID (leaving and coming back: a new one). Copying to a folder
adds its label; expunging from a folder removes it (from INBOX: archives; from All Mail: to Trash; from Trash or
Spam: deleted for good); a move is both. Every change to a message's flags, labels or place gives it a new
MODSEQ (one counter, as Gmail's is), and each view it touched a new HIGHESTMODSEQ.

`changes` lets a server wake its IDLE sessions; `stats` counts what was served, for benchmarks.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.parser
import email.policy
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime

ALL, TRASH, SPAM = "[Gmail]/All Mail", "[Gmail]/Trash", "[Gmail]/Spam"
INBOX = "INBOX"
# System folders: name -> (SPECIAL-USE attribute, the label that puts a message there).
SYSTEM = {
    INBOX: (None, "\\Inbox"),
    ALL: ("\\All", None),
    "[Gmail]/Drafts": ("\\Drafts", "\\Draft"),
    "[Gmail]/Important": ("\\Important", "\\Important"),
    "[Gmail]/Sent Mail": ("\\Sent", "\\Sent"),
    SPAM: ("\\Junk", None),
    "[Gmail]/Starred": ("\\Flagged", "\\Starred"),
    TRASH: ("\\Trash", None),
}
STARRED = "\\Starred"
FIRST_MSGID = 1_600_000_000_000_000_000


@dataclass(slots=True)
class Mail:
    msgid: int
    thrid: int
    raw: bytes
    internaldate: datetime
    message_id: str
    flags: set[str] = field(default_factory=set)  # \Deleted is per view, kept by Box.deleted
    labels: set[str] = field(default_factory=set)  # never \Starred: that is the \Flagged flag
    place: str = ALL  # ALL, TRASH or SPAM
    modseq: int = 0

    def gm_labels(self) -> list[str]:
        """X-GM-LABELS as Gmail reports them: \\Starred stands for \\Flagged."""
        shown = sorted(self.labels)
        return [*shown, STARRED] if "\\Flagged" in self.flags else shown


@dataclass(slots=True)
class Box:
    name: str
    uidvalidity: int
    uidnext: int = 1
    highestmodseq: int = 1
    uids: dict[int, int] = field(default_factory=dict)  # msgid -> uid
    deleted: set[int] = field(default_factory=set)  # msgids marked \Deleted in this view

    @property
    def special(self) -> str | None:
        return SYSTEM[self.name][0] if self.name in SYSTEM else None

    def by_uid(self) -> dict[int, int]:
        return {uid: msgid for msgid, uid in self.uids.items()}


@dataclass(slots=True)
class Stats:
    body_bytes: int = 0  # message bytes sent in BODY[]/RFC822 literals
    bodies: int = 0
    sent_bytes: int = 0  # everything written to clients
    changedsince: int = 0  # FETCHes with CHANGEDSINCE (RFC 7162): what an incremental sync should use


class GmailStore:
    def __init__(self) -> None:
        self.mails: dict[int, Mail] = {}
        self.boxes: dict[str, Box] = {}
        self._validity = itertools.count(1_000)
        self._msgids = itertools.count(FIRST_MSGID)
        self.modseq = 1
        self.changes = asyncio.Condition()
        self.stats = Stats()
        for name in SYSTEM:
            self.create_box(name)

    # -- folders ------------------------------------------------------------------------------------
    def create_box(self, name: str) -> Box:
        box = self.boxes.get(name)
        if box is None:
            box = self.boxes[name] = Box(name, next(self._validity))
            for mail in self.mails.values():
                self._index(mail, box)
        return box

    def delete_box(self, name: str) -> None:
        """Deleting a label folder removes the label from its messages (they stay in All Mail)."""
        self.boxes.pop(name)
        for mail in self.mails.values():
            if name in mail.labels:
                mail.labels.discard(name)
                self._changed(mail)

    def rename_box(self, old: str, new: str) -> None:
        box = self.boxes.pop(old)
        box.name = new
        self.boxes[new] = box
        for mail in self.mails.values():
            if old in mail.labels:
                mail.labels.discard(old)
                mail.labels.add(new)
                self._changed(mail)

    def member(self, box: Box, mail: Mail) -> bool:
        if box.name == TRASH:
            return mail.place == TRASH
        if box.name == SPAM:
            return mail.place == SPAM
        if mail.place != ALL:
            return False
        if box.name == ALL:
            return True
        if box.name in SYSTEM:
            label = SYSTEM[box.name][1]
            return "\\Flagged" in mail.flags if label == STARRED else label in mail.labels
        return box.name in mail.labels

    # -- messages -----------------------------------------------------------------------------------
    def add(
        self,
        raw: bytes,
        *,
        labels: set[str] | None = None,
        flags: set[str] | None = None,
        place: str = ALL,
        internaldate: datetime | None = None,
        thrid: int | None = None,
    ) -> Mail:
        headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)
        message_id = str(headers.get("Message-ID", "")).strip()
        msgid = next(self._msgids)
        if thrid is None:
            thrid = self._thread_of(headers) or msgid
        mail = Mail(msgid, thrid, raw, internaldate or datetime.now(UTC), message_id, set(flags or ()), place=place)
        for label in labels or ():
            self._add_label(mail, label)
        self.mails[msgid] = mail
        self._changed(mail)
        return mail

    def _thread_of(self, headers: email.message.Message) -> int | None:
        """Gmail threads a new message with the one it replies to (by In-Reply-To, then References)."""
        refs = " ".join(str(headers.get(h, "")) for h in ("In-Reply-To", "References")).split()
        for ref in refs:
            for mail in self.mails.values():
                if mail.message_id == ref:
                    return mail.thrid
        return None

    def _add_label(self, mail: Mail, label: str) -> None:
        if label == STARRED:
            mail.flags.add("\\Flagged")
        elif label == "\\Trash":
            mail.place = TRASH
        elif label == "\\Spam":
            mail.place = SPAM
        else:
            mail.labels.add(label)
            if not label.startswith("\\"):
                self.create_box(label)  # Gmail shows a label as a folder from its first use

    def _remove_label(self, mail: Mail, label: str) -> None:
        if label == STARRED:
            mail.flags.discard("\\Flagged")
        elif label in ("\\Trash", "\\Spam"):
            if mail.place == (TRASH if label == "\\Trash" else SPAM):
                mail.place = ALL
        else:
            mail.labels.discard(label)

    def change_labels(self, mail: Mail, op: str, labels: list[str]) -> None:
        """STORE [+|-]X-GM-LABELS."""
        if op == "":
            for label in [*mail.labels, STARRED]:
                if label not in labels:
                    self._remove_label(mail, label)
        for label in labels:
            (self._remove_label if op == "-" else self._add_label)(mail, label)
        self._changed(mail)

    def change_flags(self, mail: Mail, box: Box, op: str, flags: list[str]) -> None:
        """STORE [+|-]FLAGS: \\Deleted is the view's, the others the message's."""
        deleted = "\\Deleted" in {f.title() for f in flags}
        others = {f for f in flags if f.title() != "\\Deleted"}
        if op == "":
            mail.flags = others
            (box.deleted.add if deleted else box.deleted.discard)(mail.msgid)
        elif op == "+":
            mail.flags |= others
            if deleted:
                box.deleted.add(mail.msgid)
        else:
            mail.flags -= others
            if deleted:
                box.deleted.discard(mail.msgid)
        self._changed(mail)

    def copy_to(self, mail: Mail, dest: Box) -> int:
        """COPY: the message gains the destination's label (or goes to Trash or Spam, or back to All Mail)."""
        if dest.name == TRASH:
            mail.place = TRASH
        elif dest.name == SPAM:
            mail.place = SPAM
        else:
            mail.place = ALL
            label = SYSTEM[dest.name][1] if dest.name in SYSTEM else dest.name
            if label is not None:
                self._add_label(mail, label)
        self._changed(mail)
        return dest.uids[mail.msgid]

    def remove_from(self, mail: Mail, box: Box, *, moving_to: Box | None = None) -> None:
        """EXPUNGE from a view (or the source side of a MOVE): the view's label goes. From All Mail: to Trash
        (a move out of All Mail has placed it already); from Trash or Spam: deleted for good."""
        box.deleted.discard(mail.msgid)
        if box.name == ALL:
            if moving_to is None:
                mail.place = TRASH
        elif box.name in (TRASH, SPAM):
            if moving_to is None:
                self._forget(mail)
                return
        else:
            label = SYSTEM[box.name][1] if box.name in SYSTEM else box.name
            if label is not None:
                self._remove_label(mail, label)
        self._changed(mail)

    def _forget(self, mail: Mail) -> None:
        del self.mails[mail.msgid]
        self.modseq += 1
        for box in self.boxes.values():
            if box.uids.pop(mail.msgid, None) is not None:
                box.deleted.discard(mail.msgid)
                box.highestmodseq = self.modseq
        self._notify()

    def _changed(self, mail: Mail) -> None:
        self.modseq += 1
        mail.modseq = self.modseq
        for box in self.boxes.values():
            self._index(mail, box)
        self._notify()

    def _index(self, mail: Mail, box: Box) -> None:
        inside = mail.msgid in box.uids
        if self.member(box, mail):
            if not inside:
                box.uids[mail.msgid] = box.uidnext
                box.uidnext += 1
            box.highestmodseq = max(box.highestmodseq, mail.modseq)
        elif inside:
            del box.uids[mail.msgid]
            box.deleted.discard(mail.msgid)
            box.highestmodseq = max(box.highestmodseq, self.modseq)

    def _notify(self) -> None:
        async def ring() -> None:
            async with self.changes:
                self.changes.notify_all()

        # Changed outside a loop (seeding before the server starts): nobody waits.
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().create_task(ring())
