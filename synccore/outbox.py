"""The outbox sender: submits due entries (schema.outbox) over SMTP and files the Sent copy over IMAP.

```
drain()
  entries left `sending` by a dead process   -> uncertain (never resent blindly)
  each due entry: claim (queued -> sending, committed), the SMTP connection and login opened meanwhile
    submit (synccore.smtp)   250       -> sent; \\Answered on the replied message (an action)
                             4xx/lost before DATA -> queued again after a backoff
                             5xx       -> failed (the server's text), the mirror's Sent copy removed
                             lost after DATA      -> uncertain
    APPEND the Sent copy (\\Seen), APPENDUID -> the mirror's placeholder takes the UID and identity
      (Gmail: no APPEND; its SMTP filed the message: the placeholder becomes that copy, synccore.gmail)
```
Runs inside the account's action executor (same connection, same bell): sending is write-back too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Literal

from schema import folders, outbox
from schema.crypto import CredentialBox, Purpose
from schema.models import Account, Outbox
from schema.outbox import OutboxState
from schema.unit import Store
from synccore import gmail
from synccore.backoff import Backoff
from synccore.identity import IdentityMode, account_mode, identity_at
from synccore.imap import ImapClient, ImapError
from synccore.smtp import (
    Session,
    SmtpAuthFailed,
    SmtpEndpoint,
    SmtpPermanent,
    SmtpTransient,
    SmtpUncertain,
    open_session,
)
from synccore.tokens import ConsentNeeded, TokenKeeper, TokenUnavailable

log = logging.getLogger(__name__)

RETRY_CAP = 600.0


class OutboxSender:
    def __init__(
        self,
        store: Store,
        box: CredentialBox,
        account_id: int,
        client: Callable[[], Awaitable[ImapClient]],
        tokens: TokenKeeper | None = None,
    ) -> None:
        self.store = store
        self.box = box
        self.tokens = tokens or TokenKeeper(store, box)
        self.account_id = account_id
        self.client = client
        self._recovered = False

    async def drain(self) -> float | None:
        """Send what is due; seconds until the next entry is due (None: nothing queued)."""
        if not self._recovered:
            async with self.store.unit(self.account_id) as uow:
                found = await outbox.orphaned_sends(uow)
            if found:
                log.warning("account %s: %d sends interrupted by a stop are now uncertain", self.account_id, found)
            self._recovered = True
        async with self.store.sessions() as s:
            due = await outbox.due(s, self.account_id)
            # The account's SMTP settings with the entries, in the same session: the connection opens as soon as
            # the claim starts, without a session of its own first.
            account = await s.get(Account, self.account_id) if due else None
        for i, entry in enumerate(due):
            await self._send(entry, account if i == 0 else None)
        async with self.store.sessions() as s:
            return await outbox.next_wakeup(s, self.account_id)

    async def _send(self, entry: Outbox, account: Account | None = None) -> None:
        # The connection and the login go on while the entry is claimed; no byte of the message goes to the
        # server before the claim is committed (and logged): see schema.outbox.
        opening = asyncio.ensure_future(self._open(entry, account))
        try:
            async with self.store.unit(self.account_id) as uow:
                claimed = await outbox.claim(uow, entry)
        except BaseException:
            await _discard(opening)
            raise
        if not claimed:
            await _discard(opening)
            return  # cancelled meanwhile
        try:
            session = await opening
            result = await session.send(entry.envelope_from, entry.recipients, entry.message)
        except SmtpTransient as exc:
            delay = _retry_delay(entry)
            log.info("account %s: send %s: %s; again in %.0f s", self.account_id, entry.id, exc, delay)
            async with self.store.unit(self.account_id) as uow:
                await outbox.retry_later(uow, entry, delay, str(exc))
            return
        except (SmtpPermanent, ValueError) as exc:
            await self._end(entry, OutboxState.FAILED, str(exc))
            return
        except SmtpUncertain as exc:
            await self._end(entry, OutboxState.UNCERTAIN, str(exc))
            return
        response = f"{result.code} {result.text}".strip()
        if result.refused:
            refused = "; ".join(f"{addr}: {code} {text}" for addr, (code, text) in result.refused.items())
            response = f"{response} (refused: {refused})"
        # RFC 5321 §4.2.5: a 4xx on RCPT is for now; a 5xx for good (kept in the response above).
        later = [addr for addr, (code, _) in result.refused.items() if 400 <= code < 500]
        async with self.store.unit(self.account_id) as uow:
            await outbox.sent(uow, entry, response)
            if later:
                delay = _retry_delay(entry)
                resent = await outbox.resend_later(uow, entry, later, delay, f"refused for now: {refused}")
                log.info(
                    "account %s: send %s: %d recipients again as %s", self.account_id, entry.id, len(later), resent
                )
        try:
            await self._file(entry)
        except ImapError as exc:
            # Delivered all the same; the next pass over Sent finds nothing of ours, and the mirror keeps the
            # copy shown at send time until the placeholder is dropped by a later filing attempt.
            log.warning("account %s: send %s: the Sent copy was not filed: %s", self.account_id, entry.id, exc)

    async def _end(self, entry: Outbox, state: Literal[OutboxState.FAILED, OutboxState.UNCERTAIN], why: str) -> None:
        log.info("account %s: send %s %s: %s", self.account_id, entry.id, state.value, why)
        async with self.store.unit(self.account_id) as uow:
            await outbox.give_up(uow, entry, state, why)

    async def _open(self, entry: Outbox, account: Account | None = None) -> Session:
        """`account`: the account's row as just read (else read here)."""
        endpoint = await self._endpoint(account=account)
        try:
            return await open_session(endpoint)
        except SmtpAuthFailed:
            if endpoint.oauth2_token is None:
                raise
        # Refused at AUTH, before any byte of the message: an access token revoked or expired early is refreshed
        # once more and the login tried again, as IMAP logins are (synccore.tokens).
        log.info("account %s: send %s: access token refused; refreshing it once", self.account_id, entry.id)
        endpoint = await self._endpoint(replacing=endpoint.oauth2_token)
        return await open_session(endpoint)

    async def _endpoint(self, *, replacing: str | None = None, account: Account | None = None) -> SmtpEndpoint:
        if account is None:
            async with self.store.sessions() as s:
                account = await s.get(Account, self.account_id)
        if account is None or account.smtp_host is None or account.smtp_port is None:
            raise ValueError("the account has no SMTP submission server (inboxql account add ... --smtp-url)")
        security = account.smtp_security or "starttls"
        if security not in ("starttls", "tls", "plain"):
            raise ValueError(f"unknown SMTP security {security!r}")
        token: str | None = None
        if account.oauth2_provider is not None:
            try:
                token = await self.tokens.access_token(self.account_id, replacing=replacing)
            except (ConsentNeeded, TokenUnavailable) as exc:
                # Kept for later: the account's sync stops on the same refusal and shows it; a new consent sends.
                raise SmtpTransient(f"no access token for sending: {exc}") from None
        sealed = account.smtp_password or account.imap_password
        return SmtpEndpoint(
            host=account.smtp_host,
            port=account.smtp_port,
            security=security,  # type: ignore[arg-type]
            username=account.smtp_username or account.imap_username,
            password=self.box.open(sealed, Purpose.ACCOUNT) if sealed is not None else None,
            ca_file=account.tls_ca_file,
            oauth2_token=token,
        )

    async def _file(self, entry: Outbox) -> None:
        """APPEND the Sent copy (with its Bcc header, as mail clients keep it) and let the mirror's copy take
        its UID and identity."""
        if entry.mirror_message_id is None:
            return
        client = await self.client()
        if await account_mode(self.store, self.account_id, client) is IdentityMode.GMAIL:
            await self._file_on_gmail(entry, client)
            return
        async with self.store.sessions() as s:
            sent = await folders.with_role(s, self.account_id, "sent")
        if sent is None:
            return
        placed = await client.append(sent.name, entry.sent_copy, ["\\Seen"])
        if placed is None:
            return  # no UIDPLUS: the next pass over Sent mirrors the server's copy
        uidvalidity, uid = placed
        identity = await identity_at(self.store, self.account_id, client, sent.name, uid, entry.sent_copy)
        async with self.store.unit(self.account_id) as uow:
            await outbox.filed(uow, entry, uidvalidity, uid, identity)

    async def _file_on_gmail(self, entry: Outbox, client: ImapClient) -> None:
        """Gmail's SMTP filed the message itself (All Mail, labelled \\Sent): the mirror's copy becomes that
        one, never a second copy of ours. Not there after a few looks, the mirror's copy goes and the All Mail
        sync brings Gmail's when it appears."""
        async with self.store.sessions() as s:
            all_mail = await folders.with_role(s, self.account_id, "all")
        try:
            found = await gmail.filed_by_gmail(client, all_mail, entry.message_id_header) if all_mail else None
        except LookupError as exc:
            log.warning("account %s: send %s: %s", self.account_id, entry.id, exc)
            found = None
        async with self.store.unit(self.account_id) as uow:
            if found is None:
                log.info(
                    "account %s: send %s: Gmail has not filed it yet; the sync will bring it", self.account_id, entry.id
                )
                await outbox.unfiled(uow, entry)
            else:
                await outbox.filed_at_home(uow, entry, found.home, found.identity, found.raw)


async def _discard(opening: asyncio.Future[Session]) -> None:
    """A session opened for an entry that is not sent after all: stopped if still opening, else closed."""
    opening.cancel()
    await asyncio.wait({opening})  # the stop's own outcome, whatever it was, is retrieved below, never raised
    if not opening.cancelled() and opening.exception() is None:
        await opening.result().close()


def _retry_delay(entry: Outbox) -> float:
    """How long a send refused for now waits: the backoff after the entry's attempts so far."""
    backoff = Backoff(2.0, RETRY_CAP)
    backoff.attempt = entry.attempts
    return backoff.next()
