"""One account's sync: folder discovery, full passes, following the folders' changes, reconnects.

Connection budget: with `Tuning.notify` (`inboxql sync --notify`) and a server that offers RFC 5465 NOTIFY (Dovecot
does), one connection does everything: it passes over the folders, then idles with NOTIFY set on every folder, and
each change the server tells of (a STATUS of any folder, a LIST of one created or renamed) starts a pass, which skips
what its STATUS shows unchanged.
Otherwise two: one for passes over the folders, polled, and one that IDLEs on the inbox (RFC 2177: re-issued before
the server's 29-minute limit). Plus one for write-back (synccore.actions), opened when the first action comes and
kept while the account is followed. Connecting and the first pass take a slot of the process's start-up ramp
(synccore.supervisor), so a process taking a thousand accounts does not open a thousand connections at once.
A lost connection reconnects with jittered exponential backoff. A login refused for its credentials
([AUTHENTICATIONFAILED], or plain NOs several times in a row) marks the account `auth_failed` and stops it until its
credentials change; any other refusal ([UNAVAILABLE], [LIMIT], BAD) is retried with the same backoff. An OAuth2
account logs in with an access token (synccore.tokens: refreshed ahead of expiry, and once more when the server
refuses it); a grant the provider refuses, or a fresh token the server still refuses, marks it `needs_consent` and
stops it until the user consents again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.exc import DBAPIError

from ops import metrics
from ops.sampler import labelled
from schema import accounts, actions, folders, gmail, messages
from schema.crypto import CredentialBox, Purpose
from schema.folders import Discovered
from schema.models import Account, Folder, utcnow
from schema.retry import retry_deadlocks
from schema.unit import Store
from synccore import planning
from synccore.actions import ActionExecutor
from synccore.backoff import Backoff, raise_if_cancelled
from synccore.connection import IMAP_TIMEOUT, Endpoint, Refusal, open_client, refusal
from synccore.folder import BATCH_BYTES, FIRST_BATCH, MAX_MESSAGE_BYTES, FirstMessage, FolderContext, FolderSync
from synccore.identity import IdentityMode, account_mode
from synccore.imap import (
    AuthenticationFailed,
    CommandFailed,
    ConnectionLost,
    Exists,
    Expunge,
    FetchItem,
    IdleEvents,
    ImapClient,
    ImapTimeout,
    MissingCapability,
    ProtocolError,
    Untagged,
    Vanished,
)
from synccore.parsing import ParsePool, WorkerCrashed
from synccore.roles import assign_roles
from synccore.tokens import ConsentNeeded, TokenKeeper

log = logging.getLogger(__name__)

# How late an IDLE connection may hear of a change (Dovecot holds notifications about half a second).
NOTIFY_GRACE = timedelta(seconds=5)
# What a server says of a selected folder's changes, unasked (RFC 3501 §7.3-7.4, RFC 7162 §3.2.10).
_CHANGES = (Exists, Expunge, FetchItem, Vanished)

# Folders whose role makes them least urgent are synced last.
_LAST = {"trash": 2, "junk": 2, "all": 3}
# Plain NOs to LOGIN in a row that count as refused credentials (servers that name no reason).
PLAIN_REFUSALS = 3
# RFC 5465 §6: changes of every folder of the account. The selected one's are `selected-delayed`: an EXPUNGE waits for
# a command that allows it (§5.3), so the message numbers of a FETCH by sequence number stay put while it runs.
# MailboxName: a folder created, deleted or renamed (a LIST). Dovecot tells of the others' changes with a STATUS
# carrying MESSAGES, UIDNEXT and, with CONDSTORE, HIGHESTMODSEQ, about half a second after them, in IDLE or not.
NOTIFY_EVENTS = (
    b"(selected-delayed (MessageNew MessageExpunge FlagChange))",
    b"(personal (MessageNew MessageExpunge FlagChange MailboxName))",
)


@dataclass(frozen=True, slots=True)
class Tuning:
    poll_interval: float = 30.0
    idle_restart: float = 25 * 60.0  # RFC 2177: clients re-issue IDLE at least every 29 minutes
    backoff_base: float = 1.0
    backoff_cap: float = 300.0
    # Connections per account where the server has no NOTIFY (or `notify` is off): one for passes over the folders,
    # one to IDLE on the inbox. With a budget of one, the inbox is polled like every other folder.
    connections: int = 2
    # Follow every folder on one connection with RFC 5465 NOTIFY where the server offers it (`inboxql sync --notify`).
    # Off by default: a change then costs a pass over the folders' STATUS before the changed one is synced, which
    # kept new mail in the inbox slower than IDLE on it (tests/sync/test_push.py) on a loaded machine.
    notify: bool = False
    # An IMAP command fails once its connection has moved no byte for this long (not after a total time).
    imap_inactivity: float = IMAP_TIMEOUT
    # Download batches of about this many bytes (RFC822.SIZE); messages larger than max_message_bytes are skipped
    # with their reason (schema.skipped).
    batch_bytes: int = BATCH_BYTES
    max_message_bytes: int = MAX_MESSAGE_BYTES
    # Retries after a MySQL error wait at most this long (the IMAP backoff_cap protects servers, not our database).
    database_retry_cap: float = 30.0
    # Each followed folder is compared in full at least this often (synccore.folder.FolderContext says why).
    full_compare_seconds: float = field(
        default_factory=lambda: float(os.environ.get("INBOXQL_FULL_COMPARE_SECONDS", "900"))
    )
    # A folder's initial sync first downloads this many of its newest messages, before it lists every UID
    # (synccore.folder.FIRST_BATCH); 0: it lists first (bench.first_page_bench compares both).
    first_batch: int = field(default_factory=lambda: int(os.environ.get("INBOXQL_FIRST_BATCH", str(FIRST_BATCH))))
    # A folder's `synced_at` (the status page's syncedAt) is written at most this often: a lower bound of when it was
    # last found in sync. Every pass would cost an idle account a write each poll round (1,000 accounts polled every
    # 30 s: 33 transactions a second for a time on a page).
    synced_at_every: float = 300.0


@dataclass(slots=True)
class _Retry:
    """A folder whose last sync failed: when to try it again."""

    name: str  # a rename is a new chance at once
    backoff: Backoff
    due: float  # loop time


# A folder's sync that ends in one of these left the connection usable: the pass goes on with the next folder.
# (A tagged NO or BAD, e.g. `NO [SERVERBUG]` for a mailbox unreadable on disk; a parse worker that keeps dying.)
_FOLDER_FAILURES = (planning.FolderGone, CommandFailed, WorkerCrashed)


class AuthStopped(Exception):
    """The server refused the credentials: the account waits for new ones."""


class LoginDeferred(ConnectionError):
    """The server refused the login for now (`NO [UNAVAILABLE]`, `[LIMIT]`, BAD): try again after a backoff.

    A ConnectionError, so the action executor's retry of a failed connection covers it too."""


class AccountSync:
    def __init__(
        self,
        store: Store,
        box: CredentialBox,
        account_id: int,
        tuning: Tuning | None = None,
        parser: ParsePool | None = None,
        bell: asyncio.Event | None = None,
        tokens: TokenKeeper | None = None,
        ramp: asyncio.Semaphore | None = None,
        pass_slots: asyncio.Semaphore | None = None,
    ) -> None:
        self.store = store
        # The process's start-up ramp (synccore.supervisor): connecting and the first pass hold a slot of it.
        self.ramp = ramp
        # ... and its slots for the passes after the first (a change told of, a poll, the inbox's IDLE wake-up).
        self.pass_slots = pass_slots
        # OAuth2 accounts' access tokens; the supervisor shares one keeper among its accounts.
        self.tokens = tokens or TokenKeeper(store, box)
        # Rung when a mutation queued an action for this account (synccore.bells); None: the executor polls.
        self.bell = bell
        self.parser = parser or ParsePool(0)
        self.box = box
        self.account_id = account_id
        self.tuning = tuning or Tuning()
        self.mode: IdentityMode | None = None
        self.passes = 0
        # Folders synced beside the passes (the inbox, on its IDLE connection): since when a change there may not be
        # mirrored yet, or None while it idles with nothing pending. Orphan collection waits for them (_orphan_bound).
        self._watched: dict[int, datetime | None] = {}
        self.plain_refusals = 0  # plain NOs to LOGIN in a row
        self.folder_retries: dict[int, _Retry] = {}  # folders whose last sync failed, by id
        self._synced_marked: dict[int, float] = {}  # when each folder's synced_at was last written (loop time)
        self._compared: dict[int, float] = {}  # folder id -> when it was last compared in full (FolderContext)
        self.first_message = FirstMessage()  # ops.metrics.FIRST_MESSAGE
        # Gmail: the label folders (id, name) whose derived places were last brought up to date (schema.gmail).
        self._views: frozenset[tuple[int, str]] | None = None
        # Set by the executor when actions end: an undo may have put a place back that the server no longer has,
        # and a pass that left a pending action's message alone must look again. The IDLE-watched folder hears no
        # push for either, so this wakes it (_idle_inbox).
        self.actions_ended = asyncio.Event()

    # -- entry points ------------------------------------------------------------------------------
    async def run_once(self) -> None:
        """Sync until every folder is caught up, then return."""
        # The sampler's stacks of this account's work (and of the tasks it starts) begin with `account:ID`.
        with labelled(f"account:{self.account_id}"):
            await self._once()

    async def run_forever(self) -> None:
        with labelled(f"account:{self.account_id}"):
            await self._forever()

    async def _once(self) -> None:
        executor = self._executor()
        try:
            await executor.drain()  # what mutations asked first, so the pass below sees it on the server
        finally:
            await executor.close()
        client = await self._connect()
        try:
            first = utcnow()
            await self._state("syncing", keep_ready=True)
            complete = await self.full_pass(client)
            # Orphans are collected only after a pass that reached every folder: one may sit in a folder that failed.
            if await self._has_orphans():
                # A move seen as an expunge before its arrival: a second pass finds where it went.
                second = utcnow()
                if await self.full_pass(client):
                    await self._collect_orphans(second)
            elif complete:
                await self._collect_orphans(first)
            await self._state("ready")
        finally:
            await _quietly_logout(client)

    async def _forever(self) -> None:
        backoff = Backoff(self.tuning.backoff_base, self.tuning.backoff_cap)
        while True:
            try:
                await self._follow_forever(backoff)
            except AuthStopped:
                metrics.IMAP_ERRORS.labels("auth").inc()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise_if_cancelled()
                metrics.IMAP_ERRORS.labels(error_kind(exc)).inc()
                metrics.RECONNECTS.inc()
                delay = backoff.next()
                if isinstance(_innermost(exc), DBAPIError):
                    # MySQL away: retrying costs no IMAP server anything, and a restart is over in seconds.
                    delay = min(delay, self.tuning.database_retry_cap)
                log.warning("account %s: %s; reconnecting in %.1f s", self.account_id, _describe(exc), delay)
                try:
                    await self._state("error", _describe(exc))
                except Exception as unrecorded:  # MySQL may be what failed: the retry matters, not the record
                    raise_if_cancelled()
                    log.info("account %s: state not recorded: %s", self.account_id, _describe(unrecorded))
                # A cancel that landed in the record above and was swallowed on the way (a driver's cleanup) is
                # still counted on the task: raise it rather than sleep on it until the next attempt.
                raise_if_cancelled()
                await asyncio.sleep(delay)

    # -- the steady state ------------------------------------------------------------------------
    async def _follow_forever(self, backoff: Backoff) -> None:
        """The write-back executor beside the folder sync until either fails; then both stop, and its error
        (AuthStopped first) goes up to run_forever.

        Not an asyncio.TaskGroup: on Python 3.11 a group whose child fails while the group's own task is being
        cancelled raises the child's error and drops the CancelledError (and a child failing after the group's
        body ended leaves that task's cancel count raised), so the supervisor's cancel (shutdown, a lost lease)
        could be lost and the account would go on syncing.
        """
        tasks = [
            # Write-back from the start: an action never waits for a pass over the folders (an initial sync
            # of a large mailbox takes minutes).
            asyncio.create_task(self._executor().run(self.bell), name=f"account-{self.account_id}-actions"),
            asyncio.create_task(self._sync_forever(backoff), name=f"account-{self.account_id}-folders"),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                task.cancel()
            # Until both have ended: one whose cancel was swallowed on the way (raise_if_cancelled says how) is
            # asked again, instead of this account waiting on it for good.
            while pending := [t for t in tasks if not t.done()]:
                await asyncio.wait(pending, timeout=1.0)
                for task in pending:
                    task.cancel()
        errors = [e for e in (t.exception() for t in tasks if not t.cancelled()) if e is not None]
        for error in sorted(errors, key=lambda e: not isinstance(e, AuthStopped)):
            raise error

    async def _sync_forever(self, backoff: Backoff) -> None:
        client: ImapClient | None = None
        idler: ImapClient | None = None
        try:
            async with self.ramp or contextlib.nullcontext():
                client = await self._connect()
                await self._state("syncing", keep_ready=True)
                pass_start: datetime | None = utcnow()
                if not await self.full_pass(client):
                    pass_start = None
                await self._state("ready")
                backoff.reset()
                notified = await self._start_notify(client)
                if not notified and self.tuning.connections >= 2 and client.has("IDLE"):
                    try:
                        idler = await self._connect()
                    except LoginDeferred as exc:
                        # E.g. [LIMIT]: the server allows one connection less than the budget. Polling the inbox
                        # with the others beats restarting the account in a loop.
                        log.warning(
                            "account %s: a second connection was refused (%s); polling the inbox", self.account_id, exc
                        )
            if notified:
                await self._follow_notices(client, pass_start)
                return
            async with asyncio.TaskGroup() as group:
                if idler is None:
                    group.create_task(self._poll(client, pass_start, skip_roles=frozenset()))
                else:
                    group.create_task(self._idle_inbox(idler))
                    skip = frozenset({self._watched_role()})
                    group.create_task(self._poll(client, pass_start, skip_roles=skip))
        except* AuthStopped:
            raise AuthStopped() from None
        finally:
            self._watched.clear()
            if client is not None:
                await _quietly_logout(client)
            if idler is not None:
                await _quietly_logout(idler)

    async def _start_notify(self, client: ImapClient) -> bool:
        """Ask the server to tell of every folder's changes on this connection (RFC 5465); False where it cannot
        (no NOTIFY, or NO [BADEVENT]): then the inbox is watched with IDLE and the other folders are polled.
        Not on Gmail, which has no NOTIFY and whose All Mail is what to watch."""
        if not self.tuning.notify or self._gmail() or not client.has("NOTIFY"):
            return False
        try:
            await client.notify_set(*NOTIFY_EVENTS)
        except CommandFailed as exc:
            log.info("account %s: NOTIFY refused (%s); IDLE on the inbox and polling instead", self.account_id, exc)
            return False
        return True

    async def _follow_notices(self, client: ImapClient, previous_pass: datetime | None) -> None:
        """Follow every folder on the one connection NOTIFY watches: idle until the server tells of a change anywhere
        (or an action ended, or a failed folder's retry is due), then sync what changed. What the server tells of
        while a pass runs is counted (ImapClient.notices) and starts another pass at once, so nothing told is left for
        later.

        A notice names its folder (Dovecot's STATUS, about half a second after the change): when every notice since
        the last pass named a folder mirrored here, only those are synced (_told_pass), without the LIST and the
        STATUS of every folder that a pass over all of them asks first. A pass over every folder (full_pass) instead
        when a notice named no folder known (one created, deleted or renamed), an action ended (write-back may have
        changed any folder), a failed folder's retry is due, orphans wait for the passes that place or collect them
        (a message moved away is an orphan until its arrival is seen), and at least every `quiet` seconds: a folder's
        full compare comes due (FolderContext), and a notice the server never sent is caught."""
        quiet = min(self.tuning.idle_restart, self.tuning.full_compare_seconds)
        last_start = previous_pass
        loop = asyncio.get_running_loop()
        last_full = loop.time()
        # A full pass first: a folder that changed after the first pass looked at it and before NOTIFY SET is told of
        # by nobody.
        told: int | None = None
        orphans = True
        while True:
            if told == client.notices and not self.actions_ended.is_set():
                wait = max(0.0, last_full + quiet - loop.time())
                if self.folder_retries:
                    wait = max(0.0, min(wait, min(r.due for r in self.folder_retries.values()) - loop.time()))
                # Nothing selected while idling: Dovecot tells of the selected folder's new mail only within IDLE or a
                # command, of the others' at once (STATUS).
                await _leave_selected(client)
                async with client.idle() as events:
                    await self._push_or_ended(events, wait)
            async with self._pass_slot():
                named = client.take_told() if told is not None else None
                told = client.notices
                ended = self.actions_ended.is_set()
                self.actions_ended.clear()  # what ends from now on, the next pass looks at
                if (
                    named
                    and not ended
                    and not orphans
                    and loop.time() - last_full < quiet
                    and not any(r.due <= loop.time() for r in self.folder_retries.values())
                    and await self._told_pass(client, named)
                ):
                    orphans = await self._has_orphans()
                    continue
                start = utcnow()
                last_full = loop.time()
                if not await self.full_pass(client):
                    orphans = True
                    continue  # an orphan may have moved into the folder that failed: keep it (and its id)
                # Orphans from before the previous complete pass were looked for in every folder since: gone for good.
                if last_start is not None:
                    await self._collect_orphans(last_start)
                last_start = start
                orphans = await self._has_orphans()

    async def _told_pass(self, client: ImapClient, names: frozenset[str]) -> bool:
        """Sync the folders of `names` as a pass would; False, with nothing done, when one of them is not a folder
        mirrored here as it is (new, or held by a pending folder action): a pass over every folder finds out. Never
        on Gmail: its label folders are views derived from All Mail's labels (_gmail_views), which only a pass over
        every folder keeps right."""
        if self._gmail():
            return False
        async with self.store.sessions() as s:
            rows = await folders.of_account(s, self.account_id)
            waiting = await actions.pending_folders(s, self.account_id) if rows else {}
        involved = set().union(*waiting.values()) if waiting else set()
        by_name = {
            f.name: f
            for f in rows
            if f.id not in waiting and f.name not in involved and f.sync_state != "deleting" and f.name in names
        }
        if by_name.keys() != names:
            return False
        synced = [
            folder.id
            for folder in sorted(by_name.values(), key=_pass_order)
            if self._folder_due(folder) and await self._sync_folder(client, folder)
        ]
        await self._mark_synced(synced)
        self.passes += 1
        return True

    def _watched_role(self) -> str:
        """The folder the IDLE connection watches: the inbox; on Gmail All Mail, where every message is (new mail,
        and a label change, which Gmail reports as a FETCH there)."""
        return "all" if self._gmail() else "inbox"

    def _gmail(self) -> bool:
        return self.mode is IdentityMode.GMAIL

    async def _idle_inbox(self, client: ImapClient) -> None:
        inbox = await self._folder_by_role(self._watched_role())
        if inbox is None:
            return
        sync = FolderSync(self._ctx(), inbox)
        since = utcnow()
        while True:
            self._watched[inbox.id] = since
            async with self._pass_slot():
                started = utcnow()
                self.actions_ended.clear()  # what ends from now on, this run or the next looks at
                try:
                    await sync.run(client)
                except _FOLDER_FAILURES as exc:
                    failed: Exception | None = exc
                else:
                    failed = None
                    await self._folder_synced(inbox)
                    await self._mark_synced([inbox.id])
            if failed is not None:
                await asyncio.sleep(await self._folder_failed(inbox, failed))
                continue
            if any(isinstance(r, _CHANGES) for r in client.unsolicited) or self.actions_ended.is_set():
                # The inbox changed after this run's SELECT (a message moved in while it downloaded), or an action
                # ended meanwhile: look again before idling, still unsettled since the first of these runs.
                continue
            # Settled as of this run's start: what changed since is reported when IDLE starts, or while it lasts.
            since = started
            async with client.idle() as events:
                self._watched[inbox.id] = None
                pushed = await self._push_or_ended(events)
                self._watched[inbox.id] = since
            if any(isinstance(r, _CHANGES) for r in pushed):
                sync.pushed_at = time.monotonic()  # where inboxql_change_to_commit_seconds starts

    async def _push_or_ended(self, events: IdleEvents, wait: float | None = None) -> list[Untagged]:
        """What the server pushed while idling, or [] when actions ended first (or IDLE is due to restart, or `wait`
        seconds passed)."""
        push = asyncio.ensure_future(events.next(self.tuning.idle_restart if wait is None else wait))
        ended = asyncio.ensure_future(self.actions_ended.wait())
        try:
            await asyncio.wait({push, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (push, ended):
                task.cancel()
            await asyncio.gather(push, ended, return_exceptions=True)
        return push.result() if push.done() and not push.cancelled() else []

    async def _poll(self, client: ImapClient, previous_pass: datetime | None, skip_roles: frozenset[str]) -> None:
        """`previous_pass`: when the last pass that synced every folder started (None: none has yet)."""
        last_start = previous_pass
        while True:
            await asyncio.sleep(self.tuning.poll_interval)
            async with self._pass_slot():
                start = utcnow()
                if not await self.full_pass(client, skip_roles=skip_roles):
                    continue  # an orphan may have moved into the folder that failed: keep it (and its id)
                # Orphans from before the previous pass were looked for in every folder since: gone for good.
                if last_start is not None:
                    await self._collect_orphans(last_start)
                last_start = start

    def _pass_slot(self) -> contextlib.AbstractAsyncContextManager[object]:
        """A slot of the process's follow-up passes (synccore.supervisor), held while a pass after the first runs."""
        return self.pass_slots or contextlib.nullcontext()

    # -- passes --------------------------------------------------------------------------------------
    async def full_pass(self, client: ImapClient, skip_roles: frozenset[str] | set[str] = frozenset()) -> bool:
        """Sync every folder (but those of `skip_roles`); returns whether each one did. One that fails is skipped
        with its error on its row and tried again after a backoff, so it never holds up the others."""
        if self.mode is None:
            self.mode = await account_mode(self.store, self.account_id, client)
        if self.first_message.undecided:
            async with self.store.sessions() as s:
                self.first_message.begin(empty=not await messages.has_any(s, self.account_id))
        complete = True
        found = await self.discover(client)
        await self._count_unselected(client, found)
        for gone in self.folder_retries.keys() - {f.id for f in found}:
            del self.folder_retries[gone]
        stored = await self._gmail_views(found)
        mine = [
            f
            for f in found
            # a Gmail label folder: a view of All Mail, derived from the labels (schema.gmail)
            if f.role not in skip_roles and (stored is None or f.role in stored)
        ]
        unchanged = await self._unchanged(client, [f for f in mine if self._folder_due(f)])
        synced = list(unchanged)  # looked at: their STATUS shows them as their last sync left them
        for folder in mine:
            if not self._folder_due(folder):
                complete = False
                continue
            if folder.id in unchanged:
                continue
            if await self._sync_folder(client, folder):
                synced.append(folder.id)
            else:
                complete = False
        if stored is not None and complete:
            await self._views_caught_up(found)
            synced += [f.id for f in found if f.role not in gmail.STORED_ROLES]  # derived from those synced
        await self._mark_synced(synced)
        self.passes += 1
        if complete:
            self.first_message.stop()  # every folder looked at: an account with no mail is not waiting for any
        return complete

    async def _sync_folder(self, client: ImapClient, folder: Folder) -> bool:
        """Sync one folder of a pass; False when it failed (its error recorded and its retry set by _folder_failed)."""
        try:
            await FolderSync(self._ctx(), folder).run(client)
        except _FOLDER_FAILURES as exc:
            await self._folder_failed(folder, exc)
            return False
        await self._folder_synced(folder)
        return True

    async def _count_unselected(self, client: ImapClient, found: list[Folder]) -> None:
        """Ask STATUS (RFC 3501 §6.3.10) for the message count of each folder never selected yet, so the account's
        "x of N" is whole before its first folder downloads (the inbox's initial sync may take minutes before the
        others are selected; each then records its own count from SELECT, schema.folders.record_server_counts).
        Asked once per folder: a folder the server refuses is left to its own sync, which records the error."""
        unselected = [f for f in found if f.server_count is None]
        # Pipelined (each answer names its mailbox): an account of a hundred folders on a distant server waits one
        # round trip before its inbox downloads, not a hundred.
        answers = await asyncio.gather(
            *(client.status(f.name, ("MESSAGES",)) for f in unselected), return_exceptions=True
        )
        counts: dict[int, int] = {}
        for folder, status in zip(unselected, answers, strict=True):
            if isinstance(status, CommandFailed):
                continue
            if isinstance(status, BaseException):
                raise status
            if "MESSAGES" in status:
                counts[folder.id] = status["MESSAGES"]
                folder.server_count = status["MESSAGES"]
        if not counts:
            return

        async def step() -> None:
            async with self.store.unit(self.account_id) as uow:
                await folders.record_server_counts(uow, counts)

        await retry_deadlocks(step)

    async def _unchanged(self, client: ImapClient, due: list[Folder]) -> set[int]:
        """The folders of `due` that need no SELECT this pass: their STATUS (RFC 3501 §6.3.10, with CONDSTORE's
        HIGHESTMODSEQ) shows them as their last completed sync left them, so a sync would SELECT, find
        `planning.nothing_changed` and stop. Selecting a mailbox costs the server what the mailbox holds (Dovecot
        opens its index: ~50-60 ms at 100,000 messages) where STATUS of an unchanged one is answered from what it keeps
        of every mailbox (~0.2 ms), and all the STATUS go in one round trip. (Dovecot keeps nothing of INBOX there by
        default, `mailbox_list_index_include_inbox = no`: its STATUS opens it, at about a SELECT's cost; in `inboxql
        sync` the inbox is on its IDLE connection, not in the passes. BENCHMARKS.md, "Incremental cost as the folder
        grows", has the figures.)

        Only what a visit would leave as it is, is skipped; a folder is selected as before when the server has no
        CONDSTORE; when it is not followed yet (an initial sync, a resync) or its cursor is not known in full (no
        HIGHESTMODSEQ: a pass left a change alone for a pending action, or an action ended there); when its last sync
        failed (a visit clears the error); when its full compare is due (FolderContext); when a pending action names
        it (write-back may be changing it); when the server refuses its STATUS or leaves an item out of the answer;
        and when it is the mailbox this connection still has selected and cannot leave (a server answers STATUS of
        the selected mailbox from that session's view, which learns of other sessions' changes only on its next
        command there: Dovecot's answer stayed stale after an APPEND and a flag change from another connection).

        A skipped folder counts as looked at, for orphans too (_collect_orphans): with UIDNEXT, HIGHESTMODSEQ and the
        count as its last sync left them, nothing arrived there since, and what arrived before that sync was placed
        (a message it left alone for a pending action leaves no HIGHESTMODSEQ). Its STATUS is asked after the pass
        started, as a SELECT of it would be."""
        if not client.has("CONDSTORE"):
            return set()
        ctx = self._ctx()
        candidates = [
            f
            for f in due
            if f.sync_state == "follow"
            and f.uidvalidity is not None
            and f.uidnext is not None
            and f.highestmodseq
            and f.server_count is not None
            and f.sync_error is None
            and f.id not in self.folder_retries
            and not ctx.full_compare_due(f.id)
        ]
        if not candidates:
            return set()
        async with self.store.sessions() as s:
            busy = await actions.pending_in_folders(s, self.account_id)
        stale = await _leave_selected(client)
        candidates = [f for f in candidates if f.id not in busy and f.name != stale]
        answers = await asyncio.gather(
            *(client.status(f.name, planning.STATUS_ITEMS) for f in candidates), return_exceptions=True
        )
        asked: dict[int, dict[str, int]] = {}
        for folder, status in zip(candidates, answers, strict=True):
            if isinstance(status, CommandFailed):
                continue  # its sync finds out why (a folder deleted since the LIST: FolderGone)
            if isinstance(status, BaseException):
                raise status
            asked[folder.id] = status
        under = {f.id: f.uidvalidity for f in candidates if f.id in asked and f.uidvalidity is not None}
        async with self.store.sessions() as s:
            # The rows as they are now, not as the LIST found them: an action that ended meanwhile cleared a cursor.
            now = await folders.with_places_held(s, under)
        unchanged = {
            folder_id
            for folder_id, (row, held) in now.items()
            if row.sync_state == "follow"
            and row.sync_error is None
            and row.uidvalidity == under[folder_id]  # what `held` was counted under
            and planning.status_unchanged(
                row.uidvalidity, row.uidnext, row.highestmodseq, row.server_count, held, asked[folder_id]
            )
        }
        if unchanged:
            log.debug("account %s: %d folders unchanged since their last sync", self.account_id, len(unchanged))
        return unchanged

    async def _gmail_views(self, found: list[Folder]) -> frozenset[str] | None:
        """On Gmail, the roles of the folders to sync (All Mail, Trash, Spam: every message once), after bringing
        the derived places up to date if the label folders changed; None elsewhere (every folder is synced).

        A server that offers X-GM-EXT-1 but lists no \\All folder is synced folder by folder, like any other."""
        if not self._gmail() or not any(f.role == "all" for f in found):
            return None
        views = frozenset((f.id, f.name) for f in found if f.role not in gmail.STORED_ROLES)
        if views != self._views:

            async def step() -> None:
                async with self.store.unit(self.account_id) as uow:
                    await gmail.refresh_all_views(uow)

            await retry_deadlocks(step)
            self._views = views
        return frozenset(gmail.STORED_ROLES)

    async def _views_caught_up(self, found: list[Folder]) -> None:
        """Gmail: once All Mail, Trash and Spam are caught up, so are the label folders derived from them (their
        sync state says so to clients: they are never synced on their own)."""
        behind = [f for f in found if f.role not in gmail.STORED_ROLES and f.sync_state != "follow"]
        if not behind:
            return

        async def step() -> None:
            async with self.store.unit(self.account_id) as uow:
                for folder in behind:
                    await folders.set_cursor(uow, folder.id, sync_state="follow")

        await retry_deadlocks(step)

    def _folder_due(self, folder: Folder) -> bool:
        retry = self.folder_retries.get(folder.id)
        if retry is None or retry.name != folder.name:
            return True
        return asyncio.get_running_loop().time() >= retry.due

    async def _folder_failed(self, folder: Folder, exc: Exception) -> float:
        """Put the error on the folder's row and schedule its retry; returns the delay."""
        # A folder deleted since the LIST: the next discovery removes it. Else the server refused it (Dovecot
        # answers SELECT of a mailbox it cannot read with a plain `NO [SERVERBUG]`, as it does for a missing one).
        reason = exc.__cause__ if isinstance(exc, planning.FolderGone) and exc.__cause__ is not None else exc
        retry = self.folder_retries.get(folder.id)
        if retry is None or retry.name != folder.name:
            retry = _Retry(folder.name, Backoff(self.tuning.backoff_base, self.tuning.backoff_cap), 0.0)
            self.folder_retries[folder.id] = retry
        delay = retry.backoff.next()
        retry.due = asyncio.get_running_loop().time() + delay
        error = _describe(reason)
        metrics.IMAP_ERRORS.labels(error_kind(reason)).inc()
        log.warning("account %s: folder %s: %s; trying it again in %.1f s", self.account_id, folder.name, error, delay)

        async def step() -> None:
            async with self.store.unit(self.account_id) as uow:
                await folders.set_sync_error(uow, folder.id, error)

        await retry_deadlocks(step)
        folder.sync_error = error
        return delay

    async def _folder_synced(self, folder: Folder) -> None:
        if self.folder_retries.pop(folder.id, None) is None and folder.sync_error is None:
            return

        async def step() -> None:
            async with self.store.unit(self.account_id) as uow:
                await folders.set_sync_error(uow, folder.id, None)

        await retry_deadlocks(step)
        folder.sync_error = None

    async def _mark_synced(self, folder_ids: list[int]) -> None:
        """`synced_at` of the folders a pass (or the inbox's IDLE loop) found as the server holds them, shown on the
        operator's status page: one statement for those last written `Tuning.synced_at_every` ago or more."""
        now = asyncio.get_running_loop().time()
        every = self.tuning.synced_at_every
        folder_ids = [f for f in folder_ids if now - self._synced_marked.get(f, -every) >= every]
        if not folder_ids:
            return

        async def step() -> None:
            async with self.store.unit(self.account_id) as uow:
                await folders.mark_synced(uow, folder_ids)

        await retry_deadlocks(step)
        self._synced_marked.update(dict.fromkeys(folder_ids, now))

    async def discover(self, client: ImapClient) -> list[Folder]:
        """LIST the server's folders and mirror creations, renames and deletions."""
        listing = [m for m in await client.list_folders() if not _unselectable(m.flags)]
        roles = assign_roles([(m.name, m.flags, m.delimiter) for m in listing])
        found = {m.name: Discovered(m.name, m.delimiter, tuple(sorted(m.flags)), roles.get(m.name)) for m in listing}
        async with self.store.sessions() as s:
            known = {f.name: f for f in await folders.of_account(s, self.account_id)}
            # A folder a mutation created, renamed or deleted stays as the mutation left it until its action ran.
            waiting = await actions.pending_folders(s, self.account_id)
        involved = set().union(*waiting.values()) if waiting else set()
        known = {name: f for name, f in known.items() if f.id not in waiting and name not in involved}
        found = {name: d for name, d in found.items() if name not in involved}
        gone = [f for name, f in known.items() if name not in found]
        arrived = [d for name, d in found.items() if name not in known]
        relisted = [
            (f, found[name])
            for name, f in known.items()
            if name in found and _listing(found[name]) != (f.role, f.delimiter, f.attributes)
        ]
        renames = await self._match_renames(client, gone, arrived) if gone and arrived else {}

        async def step() -> None:
            async with self.store.unit(self.account_id) as uow:
                for new_name, folder in renames.items():
                    await folders.rename(uow, folder.id, new_name)
                    await folders.update_listing(uow, folder.id, found[new_name])
                for folder in gone:
                    if folder not in renames.values():
                        await folders.remove(uow, folder.id)
                for d in arrived:
                    if d.name not in renames:
                        await folders.create(uow, d)
                for folder, d in relisted:
                    await folders.update_listing(uow, folder.id, d)

        if gone or arrived or relisted:
            await retry_deadlocks(step)
        async with self.store.sessions() as s:
            rows = await folders.of_account(s, self.account_id)
        rows = [f for f in rows if f.id not in waiting and f.sync_state != "deleting"]
        return sorted(rows, key=_pass_order)

    async def _match_renames(
        self, client: ImapClient, gone: list[Folder], arrived: list[Discovered]
    ) -> dict[str, Folder]:
        """A folder that vanished and one that appeared with its UIDVALIDITY and UIDNEXT is a rename.

        Dovecot (and most servers) keep both on RENAME. Two folders created in the same second can share a
        UIDVALIDITY, so UIDNEXT must match too; the folder's next sync compares every UID's identity anyway.
        """
        by_validity: dict[tuple[int | None, int | None], Folder] = {
            (f.uidvalidity, f.uidnext): f for f in gone if f.uidvalidity and f.uidnext
        }
        matches: dict[str, Folder] = {}
        for d in arrived:
            status = await client.status(d.name, ("UIDVALIDITY", "UIDNEXT"))
            folder = by_validity.pop((status.get("UIDVALIDITY"), status.get("UIDNEXT")), None)
            if folder is not None:
                matches[d.name] = folder
        return matches

    # -- helpers -------------------------------------------------------------------------------------
    def _executor(self) -> ActionExecutor:
        """Write-back on a connection of its own, so an action never waits for a pass over the folders."""
        return ActionExecutor(
            self.store, self.account_id, self._connect, box=self.box, tokens=self.tokens, ended=self.actions_ended
        )

    def _ctx(self) -> FolderContext:
        assert self.mode is not None
        t = self.tuning
        return FolderContext(
            self.store,
            self.account_id,
            self.mode,
            self.parser,
            t.batch_bytes,
            t.max_message_bytes,
            self.first_message,
            t.full_compare_seconds,
            self._compared,
            t.first_batch,
        )

    async def _connect(self) -> ImapClient:
        async with self.store.sessions() as s:
            account = await s.get(Account, self.account_id)
        if account is None:
            raise AuthStopped(f"account {self.account_id} no longer exists")
        if account.oauth2_provider is not None:
            return await self._connect_oauth2(account)
        assert account.imap_password is not None
        endpoint = Endpoint.of(account, self.box.open(account.imap_password, Purpose.ACCOUNT))
        try:
            client = await open_client(endpoint, allow_insecure=True, inactivity=self.tuning.imap_inactivity)
        except AuthenticationFailed as exc:
            kind = refusal(exc)
            self.plain_refusals = self.plain_refusals + 1 if kind is Refusal.UNCLEAR else 0
            if kind is Refusal.TEMPORARY or (kind is Refusal.UNCLEAR and self.plain_refusals < PLAIN_REFUSALS):
                raise LoginDeferred(str(exc)) from exc
            if not await self._refuse_credentials(account.imap_password, str(exc)):
                log.info(
                    "account %s: login refused, but its credentials changed meanwhile: trying them", self.account_id
                )
                return await self._connect()
            log.warning("account %s: login refused; waiting for new credentials", self.account_id)
            raise AuthStopped(str(exc)) from exc
        self.plain_refusals = 0
        return client

    async def _connect_oauth2(self, account: Account) -> ImapClient:
        """Log in with the account's access token; a refused one is refreshed and tried once more before the
        account is marked needs_consent (synccore.tokens). A temporary refusal is retried with the backoff."""
        replacing: str | None = None
        for attempt in (1, 2):
            try:
                token = await self.tokens.access_token(self.account_id, replacing=replacing)
            except ConsentNeeded as exc:
                raise AuthStopped(str(exc)) from None
            endpoint = Endpoint.of(account, "", token)
            try:
                return await open_client(endpoint, allow_insecure=True, inactivity=self.tuning.imap_inactivity)
            except AuthenticationFailed as exc:
                if refusal(exc) is Refusal.TEMPORARY:
                    raise LoginDeferred(str(exc)) from exc
                if attempt == 2:
                    reason = f"the server refused a fresh access token ({exc}): consent again"
                    # The grant this token came from (a rotating provider replaced the one read above).
                    if not await self.tokens.refuse(self.account_id, self.tokens.grant(self.account_id), reason):
                        # A new consent arrived meanwhile: its token is tried after the backoff, not at once.
                        raise LoginDeferred(f"login refused while the grant changed: {exc}") from exc
                    raise AuthStopped(reason) from exc
                log.info("account %s: access token refused; refreshing it once", self.account_id)
                replacing = token
        raise AssertionError("unreachable")

    async def _refuse_credentials(self, tried: bytes | None, error: str) -> bool:
        """Mark the account `auth_failed` unless its credentials changed since `tried` was read."""

        async def step() -> bool:
            async with self.store.unit(self.account_id) as uow:
                return await accounts.refuse_credentials(uow, tried, error)

        return await retry_deadlocks(step)

    async def _state(self, state: str, error: str | None = None, *, keep_ready: bool = False) -> None:
        """Set the sync state clients see; with keep_ready a caught-up account stays "ready" (catching up
        again after a reconnect is not an initial sync)."""

        async def step() -> None:
            async with self.store.unit(self.account_id) as uow:
                if keep_ready and await accounts.get_state(uow) == "ready":
                    return
                await accounts.set_state(uow, state, error)

        await retry_deadlocks(step)

    async def _folder_by_role(self, role: str) -> Folder | None:
        async with self.store.sessions() as s:
            return await folders.with_role(s, self.account_id, role)

    async def _has_orphans(self) -> bool:
        async with self.store.sessions() as s:
            return await messages.has_orphans(s, self.account_id)

    def _orphan_bound(self, before: datetime) -> datetime:
        """How old an orphan must be to be gone for good: older than `before` (the start of a pass over every
        polled folder that has ended since), and than the changes a folder synced beside the passes may still hold.
        A message moved into the inbox while its IDLE connection was busy (a long download) waits for it, instead of
        being deleted and then created anew with a new id."""
        now = utcnow()
        bounds = [before]
        for since in self._watched.values():
            # Idling with nothing pending: only what the server has not reported yet (Dovecot holds it ~0.5 s).
            bounds.append(since if since is not None else now - NOTIFY_GRACE)
        return min(bounds)

    async def _collect_orphans(self, before: datetime) -> None:
        bound = self._orphan_bound(before)

        async def step() -> None:
            async with self.store.unit(self.account_id) as uow:
                await messages.collect_orphans(uow, bound)

        await retry_deadlocks(step)


def _pass_order(f: Folder) -> tuple[bool, int, str]:
    """The order a pass syncs folders in: the inbox first, the least urgent roles (_LAST) last."""
    return f.role != "inbox", _LAST.get(f.role or "", 1), f.name


def _listing(d: Discovered) -> tuple[str | None, str | None, str]:
    return d.role, d.delimiter, " ".join(d.attributes)[:512]


def _unselectable(flags: frozenset[str]) -> bool:
    lowered = {f.lower() for f in flags}
    return "\\noselect" in lowered or "\\nonexistent" in lowered


def error_kind(exc: BaseException) -> str:
    """The kind of an error that stopped a connection or a folder, one of ops.metrics.IMAP_ERROR_KINDS."""
    exc = _innermost(exc)
    if isinstance(exc, AuthenticationFailed | AuthStopped):
        return "auth"
    if isinstance(exc, LoginDeferred | CommandFailed | planning.FolderGone):
        return "refused"
    if isinstance(exc, ImapTimeout | TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionLost | OSError):  # ConnectionError and the TLS errors are OSErrors
        return "connection"
    if isinstance(exc, ProtocolError | MissingCapability):
        return "protocol"
    if isinstance(exc, DBAPIError):
        return "database"
    return "other"


def _innermost(exc: BaseException) -> BaseException:
    # A task group's failure says only "unhandled errors in a TaskGroup": what failed is inside it.
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _describe(exc: BaseException) -> str:
    exc = _innermost(exc)
    return f"{type(exc).__name__}: {exc}"[:500]


async def _leave_selected(client: ImapClient) -> str | None:
    """Leave the mailbox the connection has selected (UNSELECT, RFC 3691: nothing is expunged), so that its STATUS
    is the server's and not this session's stale view; returns its name if it is still selected (the server offers no
    UNSELECT, or refused it), None otherwise. CLOSE is never used: it expunges."""
    if client.selected is None:
        return None
    name = client.selected.name
    if not client.has("UNSELECT"):
        return name
    try:
        await client.unselect()
    except CommandFailed:
        return name
    return None


async def _quietly_logout(client: ImapClient) -> None:
    try:
        async with asyncio.timeout(5):
            await client.logout()
    except Exception:
        await client.close()
