"""The action executor: performs on the server what mutations queued (schema.actions), in order.

```
run(bell)                      woken by the account's action bell (Redis, and the sync process's sweep), or a timer
  drain()                      every due action, oldest first
    flags runs    ->  UID STORE +FLAGS/-FLAGS over UID ranges, per folder and flag set (coalesced); a refused
                      STORE fails only the actions that asked for it
    move          ->  UID MOVE (RFC 6851); COPYUID (RFC 4315) names the new UID, so the message keeps its id
    expunge       ->  UID STORE +FLAGS \\Deleted, UID EXPUNGE (RFC 4315: only these UIDs)
    folders       ->  CREATE, RENAME, DELETE
    draft_save    ->  APPEND the version (APPENDUID), UID EXPUNGE the older copies carrying the draft's Message-ID;
                      the draft's place takes the new UID and identity, so the message keeps its id
    gmail_labels  ->  UID STORE +X-GM-LABELS / -X-GM-LABELS on the message's All Mail UID (Gmail)
  complete / fail / retry_later in a unit of work each batch; a flags run of 100 places or more writes
                               the flags and MODSEQs its STOREs answered in a second unit, after its actions are done
  then the outbox (synccore.outbox): SMTP submission, the Sent copy APPENDed
```

A refusal of the server (NO, BAD, a folder or message that is gone) is permanent: the action fails and the
mirror's change is undone. A lost connection, a timeout or a temporary code (UNAVAILABLE, INUSE, LIMIT,
SERVERBUG) is transient: the action stays first in line and is tried again after a backoff.

Every step is safe to repeat after a crash: flags are added or removed (not set), a move whose source UID is
already gone looks for the message in the target by its Message-ID, CREATE of an existing folder and DELETE
of a missing one count as done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sqlalchemy.engine import Row

from schema import actions, blobs, bulk, drafts, folders, messages
from schema.actions import ActionKind, Queued
from schema.crypto import CredentialBox
from schema.messages import PlaceFlags
from schema.models import Folder, MessagePlace
from schema.retry import retry_deadlocks
from schema.unit import Store, UnitOfWork
from synccore import gmail, planning
from synccore.backoff import Backoff, raise_if_cancelled
from synccore.identity import IdentityMode, account_mode, identity_at
from synccore.imap import CommandFailed, ImapClient, ImapError, astring, format_uid_set
from synccore.outbox import OutboxSender
from synccore.tokens import TokenKeeper

log = logging.getLogger(__name__)

# Server codes that say "not now" rather than "no" (RFC 5530).
TRANSIENT_CODES = frozenset({"UNAVAILABLE", "INUSE", "LIMIT", "SERVERBUG", "OVERQUOTA"})
# How often an executor without a bell looks at its queue; the sync process's sweep rings the bells this often.
SAFETY_WAKE = 30.0
# Actions read from the queue at a time. Every other kind is performed one at a time, each after a read of the queue:
# the read stays small. A run of flag actions is performed together (a few UID STOREs, one unit of work to record
# them): one that fills a read is read again whole, up to several mutations of the most ids one may name (1,000),
# which cost two STOREs per flag set and two units when cut at 500.
QUEUE_READ = 500
FLAG_RUN_READ = 5000


# The places of a run of flag actions by id, and their folders by id (schema.messages.places_in_folders).
Placed = tuple[dict[int, Row[*tuple[Any, ...]]], dict[int, Folder]]


class Transient(Exception):
    """Try again later: the connection failed or the server said not now."""


@dataclass(slots=True)
class Outcome:
    """What became of a batch of actions, written in one unit of work."""

    done: list[tuple[Queued, tuple[int, int] | None]]
    failed: list[tuple[Queued, str]]
    # draft_save: action id -> (UIDVALIDITY, UID, identity) of the version APPENDed
    filed: dict[int, drafts.Filed] = field(default_factory=dict)
    # What a STORE answered, folder -> (UIDVALIDITY, {uid: (flags, modseq)}): the server's flags after the change,
    # others' changes included, which the mirror takes (its folder sync skipped them while the action waited).
    flags: dict[int, tuple[int, dict[int, tuple[tuple[str, ...], int | None]]]] = field(default_factory=dict)
    # A failed flag action of several folders: action id -> the folders that refused, where its change is undone
    # (the others did it). Absent: undone everywhere.
    refused_in: dict[int, set[int]] = field(default_factory=dict)

    @classmethod
    def empty(cls) -> Outcome:
        return cls([], [])


def _permanent(exc: CommandFailed) -> bool:
    return exc.code is None or exc.code.name not in TRANSIENT_CODES


def _has_code(exc: CommandFailed, *names: str) -> bool:
    return exc.code is not None and exc.code.name in names


class ActionExecutor:
    """One account's executor. `connect` opens a logged-in IMAP connection of the account's."""

    def __init__(
        self,
        store: Store,
        account_id: int,
        connect: Callable[[], Awaitable[ImapClient]],
        *,
        backoff: Backoff | None = None,
        box: CredentialBox | None = None,
        tokens: TokenKeeper | None = None,
        ended: asyncio.Event | None = None,
    ) -> None:
        self.store = store
        # Set whenever actions end (done or failed): the account's IDLE-watched folder looks again (AccountSync).
        self.ended = ended
        # Sending is write-back too: the outbox goes out on this connection, woken by the same bell.
        self.outbox = OutboxSender(store, box, account_id, self._client, tokens) if box is not None else None
        self.account_id = account_id
        self.connect = connect
        self.backoff = backoff or Backoff(1.0, 300.0)
        self.client: ImapClient | None = None
        self.performed = 0  # actions ended (done or failed), for tests and metrics

    async def run(self, bell: asyncio.Event | None) -> None:
        """Perform actions as they come until cancelled.

        With a bell, the executor looks at its queue only when rung: by a mutation (Redis), and by the sync process's
        sweep (synccore.supervisor), which rings the bell of an account with work queued when its task starts and
        every SAFETY_WAKE after, so a ring lost while Redis was away delays the work but never loses it. An idle
        executor makes no query of its own (a thousand of them, each looking at start and on a timer, took the
        database pool from the accounts' syncs: bench.thousand_bench). Only a backoff under way wakes it by the
        clock. Without a bell, it looks at start and every SAFETY_WAKE."""
        try:
            wait: float | None = None
            while True:
                if bell is not None:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):
                            await bell.wait()
                    bell.clear()
                wait = await self.drain()
                raise_if_cancelled()  # a cancel the drain turned into an error to retry later, or swallowed
                if bell is None:
                    await asyncio.sleep(SAFETY_WAKE if wait is None else min(wait, SAFETY_WAKE))
        finally:
            await self.close()

    async def close(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            try:
                async with asyncio.timeout(5):
                    await client.logout()
            except Exception:
                await client.close()

    async def drain(self) -> float | None:
        """Perform every due action and send what the outbox holds that is due; returns seconds until the next
        one is due (None: nothing pending)."""
        while True:
            wait = await self._drain_actions()
            if self.outbox is None:
                return wait
            sending = await self.outbox.drain()
            async with self.store.sessions() as s:
                wait = await actions.next_wakeup(s, self.account_id)  # sending may queue \Answered
            if wait != 0.0:
                return min((w for w in (wait, sending) if w is not None), default=None)

    async def _drain_actions(self) -> float | None:
        while True:
            # One session from the bell to the first STORE: the queue (which says the wait when nothing is due), and
            # for a run of flag actions, their places and folders.
            async with self.store.sessions() as s:
                due, wait = await actions.due_or_wakeup(s, self.account_id, QUEUE_READ)
                if not due:
                    return wait
                if len(due) == QUEUE_READ and all(a.kind == ActionKind.FLAGS for a in due):
                    due += await actions.due(s, self.account_id, FLAG_RUN_READ - QUEUE_READ, after=due[-1].id)
                first = due[0]
                batch = [first]
                placed: Placed | None = None
                if first.kind == ActionKind.FLAGS:
                    for action in due[1:]:
                        if action.kind != ActionKind.FLAGS:
                            break
                        batch.append(action)
                    placed = await messages.places_in_folders(s, [p["id"] for a in batch for p in a.payload["places"]])
            try:
                outcome = await self._perform(batch, placed)
            except (Transient, ImapError, OSError, TimeoutError) as exc:
                await self._drop_client()
                delay = self.backoff.next()
                log.warning("account %s: action %s: %s; again in %.1f s", self.account_id, first.id, exc, delay)
                await retry_deadlocks(partial(self._later, first, delay, f"{type(exc).__name__}: {exc}"))
                return delay
            self.backoff.reset()
            # The server did it: losing a deadlock here must not throw that away (the account's sync would
            # restart and perform the batch again).
            # A large run's answers (100 places or more) are written in a unit after the one that ends the actions
            # (`_record_answers` says why); a small run's in the same unit, one commit.
            answers = sum(len(by_uid) for _, by_uid in outcome.flags.values())
            apart = answers >= bulk.MANY
            await retry_deadlocks(partial(self._record, outcome, with_answers=not apart))
            if apart:
                await retry_deadlocks(partial(self._record_answers, outcome))
            self.performed += len(outcome.done) + len(outcome.failed)
            if self.ended is not None and (outcome.done or outcome.failed):
                self.ended.set()

    async def _later(self, action: Queued, delay: float, reason: str) -> None:
        async with self.store.unit(self.account_id) as uow:
            await actions.retry_later(uow, action, delay, reason)

    async def _record(self, outcome: Outcome, *, with_answers: bool) -> None:
        """The actions' ends: done (with what follows from a move, an expunge, a folder's deletion, a draft) or
        failed (undone); with the flags the STORE answered, or without (`_record_answers` writes them after)."""
        async with self.store.unit(self.account_id) as uow:
            flags = [action for action, _ in outcome.done if action.kind == ActionKind.FLAGS]
            await actions.complete_flags(uow, flags)
            if with_answers:
                await self._answers(uow, outcome)
            for action, moved_to in outcome.done:
                if action.kind == ActionKind.FLAGS:
                    continue
                await actions.complete(uow, action, moved_to=moved_to)
                if action.kind == ActionKind.EXPUNGE and action.message_id is not None:
                    await messages.drop_placeless(uow, [action.message_id])
                elif action.kind == ActionKind.FOLDER_DELETE and action.folder_id is not None:
                    await folders.remove(uow, action.folder_id)
                elif action.kind == ActionKind.DRAFT_SAVE:
                    await drafts.saved(uow, action, outcome.filed.get(action.id))
            for action, reason in outcome.failed:
                log.info("account %s: action %s (%s) failed: %s", self.account_id, action.id, action.kind, reason)
                await actions.fail(uow, action, reason, outcome.refused_in.get(action.id))
                if action.kind == ActionKind.FOLDER_CREATE and action.folder_id is not None:
                    await folders.remove(uow, action.folder_id)
                elif action.kind == ActionKind.DRAFT_SAVE:
                    await drafts.refused(uow, action)

    async def _record_answers(self, outcome: Outcome) -> None:
        """The flags and MODSEQs a large run's STOREs answered, in a unit of their own after the actions are marked
        done: the server has done them once it answered, and a client waiting for that (a 1,000-message change) no
        longer waits for 1,000 places to be compared and written (BENCHMARKS.md, write-back (b)). Those flags are what
        the mirror holds already unless another client changed the messages meanwhile; if the process stops
        between the two units, the folder's next pass learns them from the server (its HIGHESTMODSEQ was not
        moved)."""
        async with self.store.unit(self.account_id) as uow:
            await self._answers(uow, outcome)

    @staticmethod
    async def _answers(uow: UnitOfWork, outcome: Outcome) -> None:
        for folder_id, (uidvalidity, by_uid) in outcome.flags.items():
            changes = [PlaceFlags(uid, found, modseq) for uid, (found, modseq) in by_uid.items()]
            await messages.set_flags(uow, folder_id, uidvalidity, changes)

    # -- the server ----------------------------------------------------------------------------------
    async def _client(self) -> ImapClient:
        if self.client is None:
            self.client = await self.connect()
        return self.client

    async def _drop_client(self) -> None:
        await self.close()

    async def _select(self, folder: Folder) -> int | None:
        """SELECT a folder (unless it is selected already); its UIDVALIDITY. A folder the server does not have
        raises a permanent refusal."""
        client = await self._client()
        # What other sessions did meanwhile (EXPUNGE, FETCH) is the folder sync's to see, not ours.
        client.drain_unsolicited()
        if client.selected is not None and client.selected.name == folder.name and not client.selected.readonly:
            return client.selected.uidvalidity
        try:
            selected = await client.select(folder.name)
        except CommandFailed as exc:
            if not _permanent(exc):
                raise Transient(str(exc)) from exc
            raise
        return selected.uidvalidity

    async def _perform(self, batch: Sequence[Queued], placed: Placed | None = None) -> Outcome:
        kind = batch[0].kind
        if kind == ActionKind.FLAGS:
            return await self._flags(batch, placed)
        action = batch[0]
        try:
            if kind == ActionKind.MOVE:
                return Outcome([(action, await self._move(action))], [])
            if kind == ActionKind.DRAFT_SAVE:
                filed = await self._save_draft(action)
                return Outcome([(action, None)], [], {action.id: filed} if filed is not None else {})
            if kind == ActionKind.EXPUNGE:
                await self._expunge(action.payload["expunge"])
            elif kind == ActionKind.GMAIL_LABELS:
                await self._labels(action)
            elif kind == ActionKind.FOLDER_CREATE:
                await self._create(action.payload["name"])
            elif kind == ActionKind.FOLDER_RENAME:
                await self._rename(action.payload["from"], action.payload["to"])
            elif kind == ActionKind.FOLDER_DELETE:
                await self._delete(action.payload["name"])
            else:
                return Outcome([], [(action, f"unknown action kind {kind!r}")])
        except CommandFailed as exc:
            if not _permanent(exc):
                raise Transient(str(exc)) from exc
            return Outcome([], [(action, _reason(exc))])
        except Gone as exc:
            return Outcome([], [(action, str(exc))])
        return Outcome([(action, None)], [])

    async def _folders(self, ids: set[int]) -> dict[int, Folder]:
        async with self.store.sessions() as s:
            return await folders.by_ids(s, ids)

    async def _flags(self, batch: Sequence[Queued], placed: Placed | None = None) -> Outcome:
        """A run of flag changes, coalesced: per folder and per (+/-, flag set), one UID STORE over a UID set.

        The same place changed twice in the run splits it, so its changes still apply in order. `placed`: the
        run's places and their folders as read with the queue (else read here).
        """
        outcome = Outcome.empty()
        start = 0
        while start < len(batch):
            seen: set[int] = set()
            end = start
            while end < len(batch):
                ids = {p["id"] for p in batch[end].payload["places"]}
                if ids & seen:
                    break
                seen |= ids
                end += 1
            part = batch[start:end]
            await self._store(part, outcome, placed)
            start = end
        return outcome

    async def _store(self, part: Sequence[Queued], outcome: Outcome, placed: Placed | None = None) -> None:
        if placed is None:
            place_ids = [p["id"] for a in part for p in a.payload["places"]]
            async with self.store.sessions() as s:
                placed = await messages.places_in_folders(s, place_ids)
        places, folders_by_id = placed
        # folder -> (("add"|"remove"), flags) -> uids; and which actions touched which (folder, uid)
        work: dict[int, dict[tuple[str, tuple[str, ...]], set[int]]] = defaultdict(lambda: defaultdict(set))
        touched: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for action in part:
            ops = [(op, tuple(action.payload[op])) for op in ("add", "remove") if action.payload[op]]
            refs = touched[action.id]
            for ref in action.payload["places"]:
                place = places.get(ref["id"])
                if place is None:
                    continue  # gone from the mirror since (expunged): nothing to tell
                # By position (actions.PLACE_WHERE: id, message_id, folder_id, uidvalidity, uid): 1,000 places a
                # run, and a Row's lookups by name were most of this loop.
                folder_id, uidvalidity, uid = place[2], place[3], place[4]
                if uidvalidity == actions.PLACEHOLDER_UIDVALIDITY:
                    continue  # its move found no UID: nothing to tell
                for key in ops:
                    work[folder_id][key].add(uid)
                refs.append((folder_id, uid))
        missing: set[tuple[int, int]] = set()
        # What the server refused for good: a whole folder (its SELECT), or one STORE of it, by its (op, flags).
        refused: dict[int, str] = {}
        refused_stores: dict[tuple[int, tuple[str, tuple[str, ...]]], str] = {}
        client = await self._client()
        for folder_id, stores in work.items():
            folder = folders_by_id.get(folder_id)
            try:
                if folder is None:
                    raise Gone("the folder was deleted")
                uidvalidity = await self._select(folder)
                found: set[int] = set()
                stored: set[int] = set()
                answered: dict[int, tuple[tuple[str, ...], int | None]] = {}
                for key, uids in stores.items():
                    op, flags = key
                    try:
                        result = await client.uid_store(
                            sorted(uids), "add" if op == "add" else "remove", flags, silent=False
                        )
                    except CommandFailed as exc:
                        if not _permanent(exc):
                            raise
                        # Only the actions of this STORE fail: the others of the run were done (or are sent next).
                        refused_stores[(folder_id, key)] = _reason(exc)
                        continue
                    stored |= uids
                    for item in result.items:
                        if item.uid is not None:
                            found.add(item.uid)
                            if item.flags is not None:
                                answered[item.uid] = (planning.clean_flags(item.flags), item.modseq)
                if uidvalidity is not None and answered:
                    outcome.flags[folder_id] = (uidvalidity, answered)
                    # RFC 3501 §6.4.6: a UID that is not there is ignored; unchanged flags send no FETCH on some
                    # servers, so only UIDs absent from a SEARCH count as expunged.
                absent = stored - found
                if absent:
                    present = set(await client.uid_search([b"UID", format_uid_set(sorted(absent)).encode()]))
                    missing.update((folder_id, uid) for uid in absent - present)
            except CommandFailed as exc:
                if not _permanent(exc):
                    raise Transient(str(exc)) from exc
                refused[folder_id] = _reason(exc)
            except Gone as exc:
                refused[folder_id] = str(exc)
        for action in part:
            refs = touched.get(action.id, [])
            keys = [(op, tuple(action.payload[op])) for op in ("add", "remove") if action.payload[op]]
            why = {f: reason for f, _ in refs if (reason := _refusal(f, keys, refused, refused_stores)) is not None}
            if why:
                outcome.failed.append((action, next(iter(why.values()))))
                if any(f not in why for f, _ in refs):
                    # A change of several folders' messages: where the server did it, the mirror keeps it.
                    outcome.refused_in[action.id] = set(why)
            elif refs and all(ref in missing for ref in refs):
                outcome.failed.append((action, "the message was expunged on the server"))
            else:
                outcome.done.append((action, None))

    async def _move(self, action: Queued) -> tuple[int, int] | None:
        p = action.payload
        target_id: int = p["to"]
        found = await self._folders({target_id, *([p["move"]["folder_id"]] if p.get("move") else [])})
        target = found.get(target_id)
        if target is None or target.sync_state == "deleting":
            raise Gone("the target folder was deleted")
        if p.get("expunge"):
            await self._expunge(p["expunge"])
        source = p.get("move")
        if not source:
            return None
        folder = found.get(source["folder_id"])
        if folder is None:
            raise Gone("the message's folder was deleted")
        client = await self._client()
        uidvalidity = await self._select(folder)
        uid = source["uid"] if uidvalidity == source["uidvalidity"] else None
        if source["uidvalidity"] == actions.PLACEHOLDER_UIDVALIDITY:
            # An earlier move put it there without learning its UID: find it by its Message-ID.
            uids = await self._search(action)
            uid = uids[0] if len(uids) == 1 else None
        if uid is not None:
            copied = await client.uid_move([uid], target.name)
            if copied is not None and uid in copied.mapping():
                return copied.uidvalidity, copied.mapping()[uid]
        # The source UID is gone: moved before a crash, or expunged. Look for the message in the target.
        return await self._find_in(target, action)

    async def _search(self, action: Queued) -> list[int]:
        """UIDs of the message in the selected folder, by its Message-ID (none when it has none)."""
        async with self.store.sessions() as s:
            header = await messages.message_id_header(s, action.message_id)
        if not header:
            return []
        client = await self._client()
        return await client.uid_search([b"HEADER", b"Message-ID", astring(header)])

    async def _find_in(self, target: Folder, action: Queued) -> tuple[int, int] | None:
        uidvalidity = await self._select(target)
        uids = await self._search(action)
        if len(uids) == 1 and uidvalidity is not None:
            return uidvalidity, uids[0]
        if not uids:
            raise Gone("the message was expunged on the server")
        return None  # several copies: the next full compare of the target places the right one by identity

    async def _save_draft(self, action: Queued) -> drafts.Filed | None:
        """APPEND the version the action names, then expunge every other copy of the draft in its folder (the
        version it replaces, and one a crash left after an APPEND): safe to repeat. None: nothing to save, the
        draft was deleted meanwhile."""
        p = action.payload
        async with self.store.sessions() as s:
            place = await s.get(MessagePlace, p["place"]) if p.get("place") is not None else None
            folder = await s.get(Folder, p["folder_id"])
            raw = await blobs.get(s, bytes.fromhex(p["blob"]))
        if place is None or place.message_id != action.message_id or raw is None:
            return None
        if folder is None or folder.sync_state == "deleting":
            raise Gone("the Drafts folder was deleted")
        client = await self._client()
        flags = [f for f in place.flags.split() if f.lower() != "\\recent"]
        placed = await client.append(folder.name, raw, flags)
        if await account_mode(self.store, self.account_id, client) is IdentityMode.GMAIL:
            return await self._gmail_draft(folder, placed, p.get("message_id_header"))
        uidvalidity = await self._select(folder)
        if uidvalidity is None:
            raise Transient(f"{folder.name}: no UIDVALIDITY")
        header = p.get("message_id_header")
        copies = set(await client.uid_search([b"HEADER", b"Message-ID", astring(header)])) if header else set()
        if placed is not None and placed[0] == uidvalidity:
            uid = placed[1]
        elif copies:
            uid = max(copies)  # no UIDPLUS (RFC 4315): the newest copy is the one just appended
        else:
            raise Gone("the server did not keep the draft")
        stale = copies - {uid}
        if place.uidvalidity == uidvalidity and 0 < place.uid != uid:
            stale.add(place.uid)
        if stale:
            await client.uid_store(sorted(stale), "add", ["\\Deleted"])
            await client.uid_expunge(sorted(stale))
        return drafts.Filed(
            uidvalidity, uid, await identity_at(self.store, self.account_id, client, folder.name, uid, raw)
        )

    async def _gmail_draft(self, folder: Folder, placed: tuple[int, int] | None, header: str | None) -> drafts.Filed:
        """Gmail: the version APPENDed to Drafts (a label folder) is a message of All Mail; the older versions
        there are deleted for good (synccore.gmail)."""
        if placed is None:
            raise Transient(f"{folder.name}: the APPEND named no UID (APPENDUID)")
        async with self.store.sessions() as s:
            all_mail = await folders.with_role(s, self.account_id, "all")
            trash = await folders.with_role(s, self.account_id, "trash")
        if all_mail is None or trash is None:
            raise Gone("the account has no All Mail or Trash folder to keep the draft in")
        try:
            home, identity = await gmail.appended(await self._client(), folder, placed[1], all_mail, trash, header)
        except LookupError as exc:
            raise Transient(str(exc)) from exc
        return drafts.Filed(home.uidvalidity, home.uid, identity, home)

    async def _labels(self, action: Queued) -> None:
        """Gmail: the labels on the message's real place, where it is now (a move queued before may have put it
        back into All Mail since the action was queued)."""
        ref = action.payload["places"][0]
        async with self.store.sessions() as s:
            place = (await messages.places_by_id(s, [ref["id"]])).get(ref["id"])
        if place is None or place.uidvalidity <= actions.PLACEHOLDER_UIDVALIDITY:
            raise Gone("the message is not where its labels can be changed")
        folder = (await self._folders({place.folder_id})).get(place.folder_id)
        if folder is None:
            raise Gone("the folder was deleted")
        if await self._select(folder) != place.uidvalidity:
            raise Gone(f"{folder.name} has a new UIDVALIDITY")
        client = await self._client()
        for op in ("add", "remove"):
            if action.payload[op]:
                await client.uid_store_labels([place.uid], "add" if op == "add" else "remove", action.payload[op])

    async def _expunge(self, places: Sequence[dict[str, int]]) -> None:
        by_folder: dict[int, list[dict[str, int]]] = defaultdict(list)
        for place in places:
            by_folder[place["folder_id"]].append(place)
        found = await self._folders(set(by_folder))
        client = await self._client()
        for folder_id, refs in by_folder.items():
            folder = found.get(folder_id)
            if folder is None:
                continue  # the folder and its messages are gone already
            uidvalidity = await self._select(folder)
            uids = sorted(r["uid"] for r in refs if r["uidvalidity"] == uidvalidity)
            if uids:
                await client.uid_store(uids, "add", ["\\Deleted"])
                await client.uid_expunge(uids)

    async def _create(self, name: str) -> None:
        client = await self._client()
        try:
            await client.create(name)
        except CommandFailed as exc:
            if not _has_code(exc, "ALREADYEXISTS"):
                raise
        try:
            await client.subscribe(name)
        except CommandFailed as exc:
            log.info("account %s: SUBSCRIBE %s: %s", self.account_id, name, exc)

    async def _rename(self, old: str, new: str) -> None:
        client = await self._client()
        try:
            await client.rename(old, new)
        except CommandFailed as exc:
            # Renamed before a crash: the old name is gone and the new one is there.
            if not (_has_code(exc, "NONEXISTENT") and await self._exists(new)):
                raise

    async def _delete(self, name: str) -> None:
        client = await self._client()
        try:
            await client.delete(name)
        except CommandFailed as exc:
            if not (_has_code(exc, "NONEXISTENT") or not await self._exists(name)):
                raise

    async def _exists(self, name: str) -> bool:
        client = await self._client()
        return any(m.name == name for m in await client.list_folders("", name))


def _refusal(
    folder_id: int,
    keys: Sequence[tuple[str, tuple[str, ...]]],
    refused: dict[int, str],
    refused_stores: dict[tuple[int, tuple[str, tuple[str, ...]]], str],
) -> str | None:
    """Why the server refused an action's change in this folder (its SELECT, or one of the action's STOREs), or
    None."""
    if folder_id in refused:
        return refused[folder_id]
    return next((refused_stores[(folder_id, k)] for k in keys if (folder_id, k) in refused_stores), None)


class Gone(Exception):
    """What the action is about no longer exists on the server: a permanent failure."""


def _reason(exc: CommandFailed) -> str:
    code = f"[{exc.code.name}] " if exc.code is not None else ""
    return f"the server refused: {exc.status} {code}{exc.text}".strip()
