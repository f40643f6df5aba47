"""Gmail's SMTP submission, as far as a client can tell it apart from any other: what it accepts it files in the
sender's mailbox itself, as a message of All Mail labelled \\Sent and \\Seen (Google's help for IMAP clients says
not to keep a Sent copy of one's own: Gmail has filed it). The SMTP side is tests/smtp/server.py's real aiosmtpd
server (its own thread); the filing happens in the Gmail-dialect server's store, on that server's loop.

`hold` keeps what was accepted unfiled until `release()`: Gmail filing late, or a client looking too early.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.gmailserver import GmailServer
from tests.smtp.server import Handler

SENT = "[Gmail]/Sent Mail"


@dataclass
class GmailSubmission(Handler):
    gmail: GmailServer | None = None
    loop: asyncio.AbstractEventLoop | None = None
    hold: bool = False
    held: list[bytes] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        if reply.startswith("250"):
            raw = envelope.original_content or b""
            if self.hold:
                self.held.append(raw)
            else:
                assert self.loop is not None
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._filed(raw), self.loop))
        return reply

    async def release(self) -> None:
        """File what was held (called on the Gmail server's loop)."""
        self.hold = False
        for raw in self.held:
            self._file(raw)
        self.held.clear()

    async def _filed(self, raw: bytes) -> None:
        self._file(raw)

    def _file(self, raw: bytes) -> None:
        assert self.gmail is not None
        self.gmail.append(self.gmail.box(SENT), raw, ["\\Seen"], None)
