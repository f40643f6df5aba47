"""One folder's sync, a small state machine:

    INITIAL  downloading history, newest first, in bounded batches; resumable, since every batch commits
             its places and a restart only fetches what has no place yet. A folder that holds nothing yet first
             downloads and commits its newest messages by sequence number (first_batch), before it lists every
             UID: a new account's inbox shows its newest threads while the rest follows
    FOLLOW   caught up: QRESYNC (VANISHED + changed flags in SELECT), else CONDSTORE CHANGEDSINCE, else a
             full UID and flag diff
    RESYNC   UIDVALIDITY changed: forget the folder's places (their messages wait as orphans, keeping
             their ids) and download again, matching known messages by identity instead of body

The decisions are in `synccore.planning` (pure); this module does the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace

from sqlalchemy.exc import DBAPIError

from ops import metrics
from schema import folders, gmail, messages, skipped
from schema.messages import Fetched, PlaceFlags
from schema.models import Folder
from schema.retry import retry_deadlocks
from schema.unit import Store, UnitOfWork
from synccore import planning
from synccore.identity import IdentityMode, content_identity, identity_of, metadata_items
from synccore.imap import MAX_LITERAL, CommandFailed, FetchItem, ImapClient, SelectedMailbox
from synccore.parsing import ParsePool
from synccore.prepare import Prepared, prepare_many

log = logging.getLogger(__name__)

# A download batch holds at most this many bodies, and about this many bytes (RFC822.SIZE): see
# planning.plan_batches. Three batches are in flight at once (downloading, parsing, writing).
BODY_BATCH = 250
BATCH_BYTES = 8 << 20
# A folder's initial sync starts with this many of its newest messages, before the listing of every UID (which takes
# seconds on a large folder), in a batch small enough to be parsed and committed at once (FolderContext.first_batch).
FIRST_BATCH = 100
# ... parsed on the event loop (not in a worker, which a new sync process is still starting) when it holds at most this
# many bytes: a large message would hold the loop for seconds.
FIRST_BATCH_INLINE_BYTES = 2 << 20
# Larger messages are skipped with their reason: the IMAP reader refuses a literal above this.
MAX_MESSAGE_BYTES = MAX_LITERAL


@dataclass(slots=True)
class FirstMessage:
    """How long a new account waits for its first message (ops.metrics.FIRST_MESSAGE): from the start of its first
    sync, its mirror empty, to the commit of a message. Measured once per account and process; an account whose
    first pass over every folder stores nothing (an empty mailbox) is not waiting, and is no longer measured."""

    started: float | None = None  # time.monotonic(); None: not measuring
    done: bool = False

    @property
    def undecided(self) -> bool:
        """Whether the account has yet to be found new (measured) or not (ignored)."""
        return not self.done and self.started is None

    def begin(self, empty: bool) -> None:
        if not self.done and self.started is None:
            if empty:
                self.started = time.monotonic()
            else:
                self.done = True

    def stored(self, count: int) -> None:
        if count and self.started is not None:
            metrics.FIRST_MESSAGE.observe(time.monotonic() - self.started)
            self.stop()

    def stop(self) -> None:
        self.started = None
        self.done = True


@dataclass(frozen=True, slots=True)
class FolderContext:
    store: Store
    account_id: int
    mode: IdentityMode
    parser: ParsePool
    batch_bytes: int = BATCH_BYTES
    max_message_bytes: int = MAX_MESSAGE_BYTES
    first: FirstMessage | None = None
    # A folder in follow is compared in full (every UID and its flags) at least this often, whatever CONDSTORE's
    # cheap check says, and `compared` (folder id -> time.monotonic()) remembers when, across passes. The cheap
    # check (same HIGHESTMODSEQ, UIDNEXT and count) cannot see a place the mirror holds wrongly beside one it
    # misses: a mirror that drifted once, whatever the cause, would stay so. 0: only the cheap check.
    full_compare_seconds: float = 0.0
    compared: dict[int, float] = field(default_factory=dict)
    # How many of its newest messages a folder that holds none downloads before it lists every UID; 0: none.
    first_batch: int = FIRST_BATCH

    def full_compare_due(self, folder_id: int) -> bool:
        """Whether the folder is due for its full compare. Its clock starts the first time this is asked of it (its
        first follow in this process), so a pass that skips the folder on STATUS (synccore.account) and one that
        selects it keep the same clock."""
        every = self.full_compare_seconds
        return every > 0 and time.monotonic() - self.compared.setdefault(folder_id, time.monotonic()) >= every


def by_uid(items: Sequence[FetchItem]) -> dict[int, FetchItem]:
    """FETCH responses by UID, merged: a server may send a message's data in several responses (RFC 3501
    §7.4.2), e.g. an unsolicited FLAGS change of a message in the middle of our own FETCH of it."""
    merged: dict[int, FetchItem] = {}
    for item in items:
        if item.uid is None:
            continue
        seen = merged.get(item.uid)
        if seen is None:
            merged[item.uid] = item
        else:
            merged[item.uid] = replace(
                seen, **{f.name: getattr(item, f.name) for f in fields(item) if getattr(item, f.name) not in (None, {})}
            )
    return merged


async def _put(
    queue: asyncio.Queue[list[Fetched] | None], item: list[Fetched] | None, writer: asyncio.Task[None]
) -> None:
    """Hand a batch to the writer, or raise the writer's error if it has failed."""
    put = asyncio.ensure_future(queue.put(item))
    await asyncio.wait({put, writer}, return_when=asyncio.FIRST_COMPLETED)
    if not put.done():
        put.cancel()
    failure = writer.exception() if writer.done() else None
    if failure is not None:
        raise failure


class FolderSync:
    def __init__(self, ctx: FolderContext, folder: Folder) -> None:
        self.ctx = ctx
        self.folder = folder
        # Gmail (X-GM-EXT-1): labels are read with the flags and kept on the place; the label folders' places are
        # derived from them in the same unit of work (schema.gmail), since only All Mail, Trash and Spam are synced.
        self.gmail = ctx.mode is IdentityMode.GMAIL
        # This run left a change of the server's alone because a pending action protects its message: the cursor
        # then keeps no HIGHESTMODSEQ, so the folder is compared in full until the action has run.
        self.skipped = False
        # The folder's skipped messages (schema.skipped) by UID, as read before the last download.
        self._skips: dict[int, skipped.Skip] = {}
        # When the server told of a change (an IDLE push; time.monotonic()): set by whoever heard it, taken by run.
        self.pushed_at: float | None = None
        # When this run noticed the server's changes, while following (not during the initial download): the start
        # of inboxql_change_to_commit_seconds for what it commits.
        self._noticed: float | None = None

    async def run(self, client: ImapClient) -> None:
        # What the server said in passing (EXISTS, EXPUNGE, FETCH of other folders or of earlier passes) is
        # not needed: SELECT and the fetches below ask for the folder's state.
        client.drain_unsolicited()
        self.skipped = False
        await self._reload()
        noticed, self.pushed_at = self.pushed_at or time.monotonic(), None
        self._noticed = noticed if self.folder.sync_state == "follow" else None
        sel = await self._select(client)
        if sel.uidvalidity is None:
            raise planning.SyncError(f"{self.folder.name}: the server reported no UIDVALIDITY")
        if planning.uidvalidity_changed(self.folder.uidvalidity, sel.uidvalidity):
            log.info(
                "folder %s: UIDVALIDITY %s -> %s, resyncing", self.folder.id, self.folder.uidvalidity, sel.uidvalidity
            )
            await self._resync(sel.uidvalidity)
            sel = await self._select(client)
        if self.folder.sync_state == "follow":
            await self._follow(client, sel)  # the count with the cursor, after the new mail: nobody waits on it
        else:
            await self._record_count(sel.exists)
            await self._initial(client, sel)

    # -- states ----------------------------------------------------------------------------------
    async def _initial(self, client: ImapClient, sel: SelectedMailbox) -> None:
        assert sel.uidvalidity is not None
        await self._set_cursor(uidvalidity=sel.uidvalidity, sync_state="initial")
        await self._newest(client, sel.uidvalidity, sel.exists)
        remote = await self._remote_listing(client)
        await self._reconcile(client, sel.uidvalidity, remote)
        top = max(remote, default=0)
        await self._set_cursor(
            uidnext=max(sel.uidnext or 0, top + 1),
            highestmodseq=None if self.skipped else sel.highestmodseq,
            sync_state="follow",
        )

    async def _newest(self, client: ImapClient, uidvalidity: int, exists: int) -> None:
        """Download the newest `first_batch` messages (by sequence number: no UID is known yet) of a folder that holds
        none, and commit them. The listing that follows finds them placed. A folder resumed after a restart holds
        places already, and goes on newest first from the listing."""
        first = self.ctx.first_batch
        if exists == 0 or first <= 0 or await self._local_count(uidvalidity):
            return
        head = await client.fetch(max(1, exists - first + 1), exists, metadata_items(client, self.ctx.mode))
        # Parsed here if small, not in a worker process: a new sync process's workers are still starting (a fork
        # server, a new interpreter importing the parser, forks them) when its first batch arrives.
        await self._fetch_new(client, uidvalidity, list(by_uid(head.items).values()), inline=True)

    async def _follow(self, client: ImapClient, sel: SelectedMailbox) -> None:
        f = self.folder
        assert sel.uidvalidity is not None
        uidnext = f.uidnext or 1
        full = self.ctx.full_compare_due(f.id)
        # The places under this UIDVALIDITY, not the folder's total_count alone: that one counts the optimistic
        # placeholders of pending moves, which the server does not hold yet (_held subtracts them). Counted only when
        # HIGHESTMODSEQ and UIDNEXT say nothing changed: new mail moves UIDNEXT, and then the count (which new mail
        # makes differ from EXISTS, so _held would count the places one by one) decides nothing.
        unchanged = (
            planning.nothing_changed(f.highestmodseq, f.uidnext, sel.highestmodseq, sel.uidnext, sel.exists, sel.exists)
            and await self._held(sel.uidvalidity, sel.exists) == sel.exists
        )
        if unchanged and not full:
            await self._record_count(sel.exists)
            return
        if full:
            self.ctx.compared[f.id] = time.monotonic()
            await self._forget_other_uidvalidities(sel.uidvalidity)
        if not full and client.has("CONDSTORE") and f.highestmodseq and sel.highestmodseq:
            if self.gmail:
                # Gmail gives a label change a new MODSEQ too: CHANGEDSINCE reports it with the labels asked for
                # (QRESYNC's changes in SELECT would carry the flags alone).
                result = await client.uid_fetch("1:*", "(UID FLAGS X-GM-LABELS)", changedsince=f.highestmodseq)
                vanished, changed = sel.vanished, result.items
            elif sel.vanished or sel.changed:  # QRESYNC answered in SELECT (RFC 7162 §3.2.5)
                vanished, changed = sel.vanished, sel.changed
            elif "QRESYNC" in client.enabled:
                vanished, changed = [], []
            else:
                result = await client.uid_fetch("1:*", "(UID FLAGS)", changedsince=f.highestmodseq)
                vanished, changed = [], result.items
            fresh = by_uid((await client.uid_fetch(f"{uidnext}:*", metadata_items(client, self.ctx.mode))).items)
            new_items = {uid: i for uid, i in fresh.items() if uid >= uidnext}
            # Below uidnext in that answer: the folder's last message (`n:*` names it when nothing is newer), or a
            # flag change made since the SELECT, which the server tells of with this answer (the connection gives
            # a `*` range every FETCH). Either way that message's flags now, later than the SELECT's changes; and
            # the cursor keeps the SELECT's HIGHESTMODSEQ, so a change told only here was mirrored by nobody.
            told = {uid: i for uid, i in fresh.items() if uid < uidnext and i.flags is not None}
            flag_items = [i for uid, i in {**by_uid(changed), **told}.items() if uid < uidnext]
            await self._apply_changes(sel.uidvalidity, flag_items, vanished)
            if new_items:
                await self._fetch_new(client, sel.uidvalidity, list(new_items.values()))
            local_count = await self._held(sel.uidvalidity, sel.exists)
            if local_count != sel.exists:
                # Expunges CONDSTORE alone cannot report, or a race with the server: compare everything.
                await self._reconcile(client, sel.uidvalidity, await self._remote_listing(client))
            top = max(new_items, default=0)
        else:
            remote = await self._remote_listing(client)
            await self._reconcile(client, sel.uidvalidity, remote)
            top = max(remote, default=0)
        await self._set_cursor(
            uidnext=max(sel.uidnext or 0, top + 1, uidnext),
            highestmodseq=None if self.skipped else sel.highestmodseq,
            server_count=sel.exists,
        )

    async def _forget_other_uidvalidities(self, uidvalidity: int) -> None:
        async def step() -> None:
            async with self.ctx.store.unit(self.ctx.account_id) as uow:
                if await messages.remove_places(uow, self.folder.id, not_under=uidvalidity):
                    log.warning("folder %s: places under an old UIDVALIDITY forgotten", self.folder.name)

        await retry_deadlocks(step)

    async def _resync(self, uidvalidity: int) -> None:
        async def step() -> None:
            async with self.ctx.store.unit(self.ctx.account_id) as uow:
                # The folder's row first (its new UIDVALIDITY locks it): an action's undo putting a place back under
                # the old one (schema.actions.fail) either commits before, and its place is removed below, or reads
                # the new UIDVALIDITY after, and puts nothing back.
                await folders.set_cursor(
                    uow, self.folder.id, uidvalidity=uidvalidity, uidnext=None, highestmodseq=None, sync_state="initial"
                )
                await messages.remove_places(uow, self.folder.id, not_under=uidvalidity)
                await self._views(uow)
                await skipped.forget(uow, self.folder.id, uidvalidity, keep=set())

        await retry_deadlocks(step)
        await self._reload()

    # -- pieces ----------------------------------------------------------------------------------
    async def _select(self, client: ImapClient) -> SelectedMailbox:
        f = self.folder
        try:
            if "QRESYNC" in client.enabled and f.sync_state == "follow" and f.uidvalidity and f.highestmodseq:
                return await client.select(f.name, qresync=(f.uidvalidity, f.highestmodseq, None))
            return await client.select(f.name, condstore=client.has("CONDSTORE"))
        except CommandFailed as exc:
            if exc.status != "NO":
                raise
            # Deleted or renamed by another client since the LIST (Dovecot: "NO Mailbox doesn't exist", without
            # [NONEXISTENT]): the next discovery mirrors that. Before, the whole account's sync restarted.
            raise planning.FolderGone(f.name) from exc

    async def _remote_listing(self, client: ImapClient) -> dict[int, FetchItem]:
        result = await client.uid_fetch("1:*", metadata_items(client, self.ctx.mode))
        return by_uid(result.items)

    async def _local(self, uidvalidity: int) -> dict[int, tuple[str, str]]:
        async with self.ctx.store.sessions() as s:
            return await messages.held(s, self.folder.id, uidvalidity)

    async def _held(self, uidvalidity: int, exists: int) -> int:
        """The places under this UIDVALIDITY, read from the folder's kept count (schema.folders.places_under: a pass
        over a large folder costs what one over a small folder does); counted place by place only when that differs
        from the server's count, so that a kept count gone wrong is not taken for a change on every pass."""
        async with self.ctx.store.sessions() as s:
            held = await folders.places_under(s, self.folder.id, uidvalidity)
        return held if held == exists else await self._local_count(uidvalidity)

    async def _local_count(self, uidvalidity: int) -> int:
        async with self.ctx.store.sessions() as s:
            return await messages.held_count(s, self.folder.id, uidvalidity)

    async def _reconcile(self, client: ImapClient, uidvalidity: int, remote: dict[int, FetchItem]) -> None:
        plan = planning.plan_reconcile(
            await self._local(uidvalidity),
            {uid: (self._key(i), identity_of(self.ctx.mode, i)) for uid, i in remote.items()},
        )
        if plan.removed or plan.new:
            log.info(
                "folder %s: %d new, %d gone, %d with new flags",
                self.folder.name,
                len(plan.new),
                len(plan.removed),
                len(plan.flag_changes),
            )
        await self._apply_changes(uidvalidity, [remote[uid] for uid in plan.flag_changes], plan.removed)
        async with self.ctx.store.sessions() as s:
            recorded = await skipped.of_folder(s, self.folder.id, uidvalidity)
        if recorded.keys() - remote.keys():
            await self._forget_skips(uidvalidity, keep=set(remote))
        if plan.new:
            await self._fetch_new(client, uidvalidity, [remote[uid] for uid in plan.new])

    async def _apply_changes(self, uidvalidity: int, flag_items: Sequence[FetchItem], removed: Sequence[int]) -> None:
        if not flag_items and not removed:
            return
        changes = [
            PlaceFlags(i.uid, planning.clean_flags(i.flags or ()), i.modseq, self._labels(i))
            for i in flag_items
            if i.uid is not None
        ]

        async def step() -> bool:
            async with self.ctx.store.unit(self.ctx.account_id) as uow:
                await messages.remove_places(uow, self.folder.id, list(removed))
                await skipped.forget(uow, self.folder.id, uidvalidity, uids=list(removed))
                await messages.set_flags(uow, self.folder.id, uidvalidity, changes)
                await self._views(uow)
            return uow.skipped_pending

        self.skipped |= await retry_deadlocks(step)
        self._committed(0)

    async def _fetch_new(
        self, client: ImapClient, uidvalidity: int, items: list[FetchItem], *, inline: bool = False
    ) -> None:
        """Place known messages at once; download the others newest first, one batch ahead (`inline`: a batch of
        at most FIRST_BATCH_INLINE_BYTES is parsed on the event loop, not by the parse pool)."""
        items.sort(key=lambda i: i.uid or 0, reverse=True)
        with_identity = [i for i in items if identity_of(self.ctx.mode, i)]
        async with self.ctx.store.sessions() as s:
            known = await messages.known_identities(
                s, self.ctx.account_id, (identity_of(self.ctx.mode, i) or "" for i in with_identity)
            )
        placed = [i for i in with_identity if identity_of(self.ctx.mode, i) in known]
        while placed:
            try:
                await self._write(uidvalidity, [self._fetched(i) for i in placed])
                break
            except messages.Unknown as exc:  # deleted since known_identities: download those after all
                placed = [i for i in placed if identity_of(self.ctx.mode, i) not in exc.identities]
        placed_uids = {i.uid for i in placed}
        todo = [i for i in items if i.uid not in placed_uids]
        todo = await self._leave_out(uidvalidity, todo)
        by = {i.uid: i for i in todo}
        batches = [
            [by[uid] for uid in batch]
            for batch in planning.plan_batches([(i.uid or 0, i.size) for i in todo], self.ctx.batch_bytes, BODY_BATCH)
        ]
        if not batches:
            return
        # Three stages overlap: batch n+1 downloads while batch n is parsed (in a worker process when the
        # pool has one) and batch n-1 is written. Writes stay in order, one at a time.
        writes: asyncio.Queue[list[Fetched] | None] = asyncio.Queue(maxsize=1)
        writer = asyncio.create_task(self._write_queue(uidvalidity, writes))
        pending: asyncio.Future[dict[int, FetchItem]] | None = asyncio.ensure_future(self._bodies(client, batches[0]))
        try:
            for n in range(len(batches)):
                assert pending is not None
                bodies = await pending
                pending = asyncio.ensure_future(self._bodies(client, batches[n + 1])) if n + 1 < len(batches) else None
                metas = [m for m in batches[n] if m.uid in bodies]
                if len(metas) < len(batches[n]):
                    log.info("folder %s: %d expunged before download", self.folder.name, len(batches[n]) - len(metas))
                raws = [bodies[m.uid or 0].body or b"" for m in metas]
                if inline and sum(map(len, raws)) <= FIRST_BATCH_INLINE_BYTES:
                    prepared = prepare_many(raws)
                else:
                    prepared = await self.ctx.parser.prepare(raws)
                fetched = [
                    self._fetched(meta, body=raw, prepared=p)
                    for meta, raw, p in zip(metas, raws, prepared, strict=True)
                ]
                await _put(writes, fetched, writer)
            await _put(writes, None, writer)
            await writer
        finally:
            for task in (writer, pending):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    async def _leave_out(self, uidvalidity: int, todo: list[FetchItem]) -> list[FetchItem]:
        """What of `todo` to download: not what is over the size limit (recorded as skipped, with why), nor what
        the store refused before under this UIDVALIDITY."""
        async with self.ctx.store.sessions() as s:
            self._skips = await skipped.of_folder(s, self.folder.id, uidvalidity)
        limit = self.ctx.max_message_bytes
        large = [
            skipped.Skip(i.uid or 0, i.size, skipped.TOO_LARGE, f"{i.size} bytes: over the limit of {limit} bytes")
            for i in todo
            if planning.too_large(i.size, limit)
        ]
        if large:
            log.warning("folder %s: %d messages over %d bytes skipped", self.folder.name, len(large), limit)
            await self._record_skips(uidvalidity, large)
        left_out = {k.uid for k in large} | {uid for uid, k in self._skips.items() if k.kind == skipped.UNSTORABLE}
        return [i for i in todo if i.uid not in left_out]

    async def _write_queue(self, uidvalidity: int, writes: asyncio.Queue[list[Fetched] | None]) -> None:
        while (fetched := await writes.get()) is not None:
            await self._write(uidvalidity, fetched)

    async def _bodies(self, client: ImapClient, batch: Sequence[FetchItem]) -> dict[int, FetchItem]:
        uids = [i.uid for i in batch if i.uid is not None]
        result = await client.uid_fetch(uids, "(UID BODY.PEEK[])")
        return {uid: i for uid, i in by_uid(result.items).items() if i.body is not None}

    def _fetched(self, meta: FetchItem, *, body: bytes | None = None, prepared: Prepared | None = None) -> Fetched:
        identity = identity_of(self.ctx.mode, meta)
        if identity is None and prepared is not None:
            identity = content_identity(prepared.digest)
        assert identity is not None
        return Fetched(
            uid=meta.uid or 0,
            flags=planning.clean_flags(meta.flags or ()),
            modseq=meta.modseq,
            identity=identity,
            internaldate=meta.internaldate,
            raw=body,
            parsed=prepared.parsed if prepared is not None else None,
            packed=(prepared.codec, prepared.packed) if prepared is not None else None,
            labels=self._labels(meta) or (),
            gm_thread=meta.gm_thrid if self.gmail else None,
        )

    def _labels(self, item: FetchItem) -> tuple[str, ...] | None:
        """X-GM-LABELS on Gmail (None elsewhere, or when the server left them out of a FETCH)."""
        return item.gm_labels if self.gmail else None

    def _key(self, item: FetchItem) -> str:
        """What is compared of a place: flags, and on Gmail labels (schema.gmail.place_key)."""
        return gmail.place_key(planning.flags_text(item.flags or ()), gmail.labels_text(self._labels(item) or ()))

    async def _views(self, uow: UnitOfWork) -> None:
        """Gmail: the label folders follow the labels of the messages this unit changed."""
        if self.gmail:
            await gmail.refresh_views(uow, sorted(uow.dirty_messages))

    async def _write(self, uidvalidity: int, fetched: list[Fetched]) -> None:
        """Write a batch; if the store refuses it, each message alone, so that one bad message (a row over
        max_allowed_packet, a header too long for its column) cannot stop the rest of its folder."""
        if not fetched:
            return
        try:
            await self._write_units(uidvalidity, fetched)
        except DBAPIError as exc:
            if len(fetched) == 1:
                await self._write_alone(uidvalidity, fetched[0], exc)
                return
            log.warning(
                "folder %s: a batch of %d was refused (%s); one by one", self.folder.name, len(fetched), _brief(exc)
            )
            for f in fetched:
                await self._write_alone(uidvalidity, f, None)

    async def _write_alone(self, uidvalidity: int, f: Fetched, refused: DBAPIError | None) -> None:
        """One message, once more as it is (after the database answered a read), then raw and flagged, then
        recorded as skipped with the store's reason. Before each step after a failure the database is read
        (`_reload`): if it is down, that raises and the account retries later, instead of blaming the message
        for an outage (or storing it raw only because MySQL restarted meanwhile)."""
        flagged = replace(f, parsed=messages.raw_only(f.parsed)) if f.parsed is not None else None
        for attempt in (f, f if refused is None else None, flagged):
            if attempt is None:
                continue
            if refused is not None:
                await self._reload()
            try:
                await self._write_units(uidvalidity, [attempt])
            except DBAPIError as exc:
                refused = exc
                continue
            if attempt is not f:
                log.warning("folder %s: UID %d stored raw only: %s", self.folder.name, f.uid, _brief(refused))
            return
        await self._reload()
        size = len(f.raw) if f.raw is not None else None
        log.warning("folder %s: UID %d skipped: %s", self.folder.name, f.uid, _brief(refused))
        reason = f"the store refused it: {_brief(refused)}"
        await self._record_skips(uidvalidity, [skipped.Skip(f.uid, size, skipped.UNSTORABLE, reason)])

    async def _write_units(self, uidvalidity: int, fetched: list[Fetched]) -> None:
        written = [f.uid for f in fetched if f.uid in self._skips]

        async def step() -> tuple[bool, int]:
            async with self.ctx.store.unit(self.ctx.account_id) as uow:
                await messages.add(uow, self.folder.id, uidvalidity, fetched)
                await self._views(uow)
                if written:  # skipped before (a limit raised since): mirrored now
                    await skipped.forget(uow, self.folder.id, uidvalidity, uids=written)
            return uow.skipped_pending, uow.new_messages

        skipped_pending, created = await retry_deadlocks(step)
        self.skipped |= skipped_pending
        self._committed(created)

    def _committed(self, created: int) -> None:
        """Metrics of a commit that mirrored the server's changes (`created`: new messages among them)."""
        metrics.MESSAGES_MIRRORED.inc(created)
        if self.ctx.first is not None:
            self.ctx.first.stored(created)
        if self._noticed is not None:
            metrics.CHANGE_TO_COMMIT.observe(time.monotonic() - self._noticed)

    async def _record_skips(self, uidvalidity: int, skips: list[skipped.Skip]) -> None:
        async def step() -> None:
            async with self.ctx.store.unit(self.ctx.account_id) as uow:
                await skipped.record(uow, self.folder.id, uidvalidity, skips)

        await retry_deadlocks(step)
        self._skips.update({k.uid: k for k in skips})

    async def _forget_skips(self, uidvalidity: int, keep: set[int]) -> None:
        async def step() -> None:
            async with self.ctx.store.unit(self.ctx.account_id) as uow:
                await skipped.forget(uow, self.folder.id, uidvalidity, keep=keep)

        await retry_deadlocks(step)

    async def _record_count(self, exists: int) -> None:
        """The server's count of the folder, before any batch is downloaded: an initial sync reads "x of N" from
        its start (schema.status). Written only when it moved (schema.folders.record_server_counts). A followed
        folder's is written with its cursor at the end of the run instead: a commit less before new mail is
        committed (and its doorbell rung)."""
        if self.folder.server_count == exists:
            return

        async def step() -> None:
            async with self.ctx.store.unit(self.ctx.account_id) as uow:
                await folders.record_server_counts(uow, {self.folder.id: exists})

        await retry_deadlocks(step)
        self.folder.server_count = exists

    async def _set_cursor(self, **values: object) -> None:
        async def step() -> None:
            async with self.ctx.store.unit(self.ctx.account_id) as uow:
                await folders.set_cursor(uow, self.folder.id, **values)

        await retry_deadlocks(step)
        await self._reload()

    async def _reload(self) -> None:
        async with self.ctx.store.sessions() as s:
            fresh = await s.get(Folder, self.folder.id)
            if fresh is None:
                raise planning.FolderGone(self.folder.name)
            self.folder = fresh


def _brief(exc: BaseException | None) -> str:
    # The driver's own words (code and message), not SQLAlchemy's statement and parameters: those hold the mail.
    orig = getattr(exc, "orig", exc)
    return f"{type(orig).__name__}: {orig}"[:300]
