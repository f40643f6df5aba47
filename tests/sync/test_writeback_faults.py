"""Write-back under faults: random mutations from several clients over HTTP, a random IMAP workload on another
connection, and the sync process SIGKILLed again and again. At the end the server equals the mirror, every action
ended (done, or failed with a reason), none was applied twice, and every failure left the mirror as the server has
it.

```
4 clients --HTTP--> gateway (uvicorn) --actions, optimistic rows--> MariaDB <--> `inboxql sync` (subprocess)
                                                                                  |  SIGKILLed >= 20 times
a workload on its own IMAP connection: APPEND, STORE, MOVE, EXPUNGE,  ------->  Dovecot
CREATE, RENAME, DELETE (of folders the mutations move into)
```

The workload makes no copies, and the write-back never appends, so a Message-ID found twice on the server can only
be an action performed twice. The seed of the random choices is printed; INBOXQL_FAULT_SEED sets it (timing still
differs from run to run). The sync's log is kept in the test's tmp_path (its path is printed on failure).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from sqlalchemy import func, select

from gateway.config import GatewayConfig
from gateway.ids import from_global, to_global
from gateway.testing import Client, ServerThread, start_gateway
from inboxql.devmail import DovecotServer
from inboxql.mailgen import generate
from schema import tokens
from schema.actions import PLACEHOLDER_UIDVALIDITY, ActionState
from schema.crypto import CredentialBox
from schema.models import Action, Folder, Message, MessagePlace
from schema.settings import Settings
from schema.unit import Store
from synccore.imap import CommandFailed, ImapClient
from synccore.verify import verify
from tests.conftest import new_user
from tests.sync.support import add_account, assert_identical, connect, fold_log, mirror_objects, sync_once
from tests.sync.workload import Workload

INBOXQL = str(Path(sys.executable).with_name("inboxql"))
MUTATIONS = 500
CLIENTS = 4
MIN_KILLS = 20
SEEDED = {"INBOX": 160, "Archive": 60, "Projects": 50, "Receipts 2026": 30}
LABELS = ("$Fault", "todo", "later")
MADE = "Fault "  # the folders the mutations create start so
ALLOWED_REFUSALS = {"NOT_FOUND", "BAD_USER_INPUT"}


def _env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "INBOXQL_DATABASE_URL": settings.database_url,
        "INBOXQL_REDIS_URL": settings.redis_url,
        "INBOXQL_SECRET_KEY": settings.secret_key,
        # Folders are compared in full every 10 s (beside CONDSTORE's cheap check), as they are every 15 minutes
        # by default: the convergence check below waits 60 s.
        "INBOXQL_FULL_COMPARE_SECONDS": "10",
    }


def _message_id(raw: bytes) -> str:
    return str(BytesHeaderParser().parsebytes(raw)["Message-ID"]).strip().strip("<>")


class FaultWorkload(Workload):
    """The random workload of the convergence test, with moves instead of copies (see the module docstring),
    recording what it appends, and now and then deleting a folder the mutations created."""

    def __init__(self, client: ImapClient, seed: int, folders: list[str]) -> None:
        super().__init__(client, seed)
        self.folders = list(folders)
        self.appended: set[str] = set()
        self.mail = self._recording(self.mail)

    def _recording(self, mail: Iterator[bytes]) -> Iterator[bytes]:
        for raw in mail:
            self.appended.add(_message_id(raw))
            yield raw

    async def copy(self) -> None:
        await self.move()

    async def step(self) -> None:
        if self.rng.random() < 0.03:
            made = [m.name for m in await self.client.list_folders() if m.name.startswith(MADE)]
            if made:
                name = self.rng.choice(made)
                await self.client.unselect() if self.client.selected else None
                try:
                    await self.client.delete(name)
                    self.log.append(f"delete {name} (made by a mutation)")
                except CommandFailed as exc:
                    self.log.append(f"delete {name} refused: {exc}")
                return
        await super().step()


@dataclass
class Tally:
    """What the clients asked and what they got."""

    actions: set[int] = field(default_factory=set)
    sent: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    retries: int = 0


def _mutation(name: str, payload: str) -> str:
    input_type = name[0].upper() + name[1:] + "Input"
    return f"mutation($input: {input_type}!) {{ {name}(input: $input) {{ {payload} }} }}"


MESSAGE_PAYLOAD = "actions { id state }"
FOLDER_PAYLOAD = "action { id state } folder { id name }"


@dataclass
class Mirror:
    """The mirror as the clients see it (read straight from the database: cheaper than paging GraphQL)."""

    messages: list[tuple[int, int, str | None, int]]  # (message, thread, Message-ID, folder)
    folders: list[tuple[int, str, str | None]]  # (folder, name, role)


async def _mirror(store: Store, account_id: int) -> Mirror:
    async with store.sessions() as s:
        rows = await s.execute(
            select(MessagePlace.message_id, Message.thread_id, Message.message_id_header, MessagePlace.folder_id)
            .join(Message, Message.id == MessagePlace.message_id)
            .where(MessagePlace.account_id == account_id)
        )
        messages = [(m, t, h, f) for m, t, h, f in rows]
        found = await s.execute(
            select(Folder.id, Folder.name, Folder.role).where(
                Folder.account_id == account_id, Folder.sync_state != "deleting"
            )
        )
        folders = [(i, n, r) for i, n, r in found]
    return Mirror(messages, folders)


class MutatingClient:
    def __init__(self, number: int, client: Client, store: Store, account_id: int, seed: int, tally: Tally) -> None:
        self.number = number
        self.client = client
        self.store = store
        self.account_id = account_id
        self.rng = random.Random(seed)
        self.tally = tally

    async def run(self, count: int) -> None:
        for n in range(count):
            await asyncio.sleep(self.rng.uniform(0, 0.35))
            await self.one(n)

    def _ids(self, mirror: Mirror, pool: list[tuple[int, int, str | None, int]] | None = None) -> list[str]:
        pool = pool or mirror.messages
        if self.rng.random() < 0.2:
            return [to_global("Thread", self.rng.choice(pool)[1])]
        chosen = self.rng.sample(pool, k=min(len(pool), self.rng.choice((1, 1, 1, 2, 3))))
        return [to_global("Message", m) for m, _, _, _ in chosen]

    async def one(self, n: int) -> None:
        mirror = await _mirror(self.store, self.account_id)
        if not mirror.messages:
            return
        made = [f for f in mirror.folders if f[1].startswith(MADE)]
        kinds = {
            "updateMessages": 40,
            "moveMessages": 22,
            "trashMessages": 8,
            "restoreMessages": 8,
            "deleteMessages": 3,
            "createFolder": 4 if len(made) < 4 else 0,
            "renameFolder": 3 if made else 0,
            "deleteFolder": 2 if made else 0,
        }
        name = self.rng.choices(list(kinds), weights=list(kinds.values()))[0]
        payload = MESSAGE_PAYLOAD
        input_: dict[str, Any]
        if name == "updateMessages":
            input_ = {"ids": self._ids(mirror)}
            while len(input_) == 1:
                if self.rng.random() < 0.5:
                    input_["unread"] = self.rng.random() < 0.5
                if self.rng.random() < 0.5:
                    input_["starred"] = self.rng.random() < 0.5
                if self.rng.random() < 0.3:
                    input_["addLabels"] = [self.rng.choice(LABELS)]
                elif self.rng.random() < 0.3:
                    input_["removeLabels"] = [self.rng.choice(LABELS)]
        elif name == "moveMessages":
            input_ = {"ids": self._ids(mirror)}
            if self.rng.random() < 0.3:
                input_["role"] = self.rng.choice(("inbox", "archive", "trash"))
            else:
                input_["folderId"] = to_global("Folder", self.rng.choice(mirror.folders)[0])
        elif name == "restoreMessages":
            trash = {f for f, _, role in mirror.folders if role == "trash"}
            in_trash = [m for m in mirror.messages if m[3] in trash]
            input_ = {"ids": self._ids(mirror, in_trash or None)}
        elif name in ("trashMessages", "deleteMessages"):
            input_ = {"ids": self._ids(mirror)}
            if name == "deleteMessages":
                input_["ids"] = input_["ids"][:1]
        elif name == "createFolder":
            payload = FOLDER_PAYLOAD
            input_ = {"accountId": to_global("Account", self.account_id), "name": f"{MADE}{self.number}-{n}"}
        else:
            payload = FOLDER_PAYLOAD
            folder = self.rng.choice(made)
            input_ = {"id": to_global("Folder", folder[0])}
            if name == "renameFolder":
                input_["name"] = f"{MADE}{self.number}-{n}r"
        keyed = self.rng.random() < 0.3
        if keyed:
            input_["idempotencyKey"] = f"client{self.number}-{n}"
        self.tally.sent[name] += 1
        answer = await self.client.run(_mutation(name, payload), {"input": input_})
        first = self._record(name, answer)
        if keyed and self.rng.random() < 0.4:
            # The client timed out, say: it sends the same request again, once or twice at the same time.
            again = await asyncio.gather(
                *(self.client.run(_mutation(name, payload), {"input": input_}) for _ in range(self.rng.randint(1, 2)))
            )
            for answer in again:
                self.tally.retries += 1
                again_ids = self._record(name, answer)
                if isinstance(first, list):
                    assert again_ids == first, (name, input_, answer)

    def _record(self, name: str, answer: dict[str, Any]) -> list[int] | str:
        """The action ids a mutation answered with (or its error code)."""
        if answer.get("errors"):
            codes = {e["extensions"]["code"] for e in answer["errors"]}
            assert codes <= ALLOWED_REFUSALS, (name, answer)
            self.tally.refused[f"{name} {'/'.join(sorted(codes))}"] += 1
            return "/".join(sorted(codes))
        data = answer["data"][name]
        nodes = data["actions"] if "actions" in data else [data["action"]]
        ids = [from_global(a["id"])[1] for a in nodes]
        self.tally.actions.update(ids)
        return ids


class Killer:
    """Runs `inboxql sync` for one account and SIGKILLs it at random moments, restarting it each time."""

    def __init__(self, settings: Settings, account_id: int, log: IO[bytes], seed: int) -> None:
        self.settings = settings
        self.account_id = account_id
        self.log = log
        self.rng = random.Random(seed)
        self.proc: asyncio.subprocess.Process | None = None
        self.kills = 0

    async def start(self) -> None:
        command = [INBOXQL, "-v", "sync", "--account", str(self.account_id), "--poll-interval", "0.5"]
        self.proc = await asyncio.create_subprocess_exec(
            *command, env=_env(self.settings), stdout=asyncio.subprocess.DEVNULL, stderr=self.log
        )

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()
            self.kills += 1
            self.log.write(f"=== SIGKILL {self.kills} ===\n".encode())
            self.log.flush()
        self.proc = None

    async def run(self, stop: asyncio.Event, store: Store) -> None:
        """Kill and restart until `stop` is set and MIN_KILLS kills are done; a sync is left running.

        Half the kills come at any moment (while the process starts, during a pass...), half right after the
        restarted process ended an action, when it is most likely in the middle of the next one."""
        await self.start()
        while not stop.is_set() or self.kills < MIN_KILLS:
            if self.rng.random() < 0.5:
                await asyncio.sleep(self.rng.uniform(0.3, 5.0))
            else:
                ended, deadline = await _ended(store, self.account_id), time.monotonic() + 8
                while await _ended(store, self.account_id) == ended and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                await asyncio.sleep(self.rng.uniform(0, 0.3))
            assert self.proc is not None
            assert self.proc.returncode is None, "the sync process died by itself"
            await self.kill()
            await self.start()


async def _ended(store: Store, account_id: int) -> int:
    async with store.sessions() as s:
        found = await s.scalar(
            select(func.count())
            .select_from(Action)
            .where(Action.account_id == account_id, Action.state != ActionState.PENDING.value)
        )
    return int(found or 0)


async def _pending(store: Store, account_id: int) -> int:
    async with store.sessions() as s:
        found = await s.scalar(
            select(func.count())
            .select_from(Action)
            .where(Action.account_id == account_id, Action.state == ActionState.PENDING.value)
        )
    return int(found or 0)


async def _server_message_ids(client: ImapClient) -> Counter[str]:
    """How often each Message-ID is on the server, over every folder."""
    found: Counter[str] = Counter()
    for mailbox in await client.list_folders():
        if {f.lower() for f in mailbox.flags} & {"\\noselect", "\\nonexistent"}:
            continue
        sel = await client.select(mailbox.name, readonly=True)
        if not sel.exists:
            continue
        result = await client.uid_fetch("1:*", "(UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        for item in result.items:
            header = next(iter(item.sections.values()), None) or b""
            found[_message_id(header)] += 1
    return found


@pytest.mark.slow
@pytest.mark.hang_seconds(600)
async def test_mutations_survive_sigkills_and_a_concurrent_workload(
    settings: Settings, store: Store, credential_box: CredentialBox, dovecot: DovecotServer, tmp_path: Path
) -> None:
    seed = int(os.environ.get("INBOXQL_FAULT_SEED") or random.randrange(1 << 30))
    print(f"\nINBOXQL_FAULT_SEED={seed}")
    started = time.monotonic()
    user, password = new_user(dovecot)
    mail = list(generate(sum(SEEDED.values()), seed=seed))
    seeded = {_message_id(raw) for raw in mail}
    setup = await connect(dovecot, user, password)
    offset = 0
    for folder, count in SEEDED.items():
        if folder not in ("INBOX", "Archive"):
            await setup.create(folder)
        dovecot.append(user, password, folder, mail[offset : offset + count])
        offset += count
    await setup.logout()
    account_id = await add_account(store, credential_box, dovecot, user, password)
    await sync_once(store, credential_box, account_id)

    async with store.sessions() as s, s.begin():
        token_list = [await tokens.create_token(s, [account_id]) for _ in range(CLIENTS)]
    gateway: ServerThread = start_gateway(settings, GatewayConfig(webhooks=False))
    other = await connect(dovecot, user, password)
    workload = FaultWorkload(other, seed, list(SEEDED))
    tally = Tally()
    log_path = tmp_path / "sync.log"
    stop = asyncio.Event()
    with log_path.open("ab") as log:
        killer = Killer(settings, account_id, log, seed + 1)
        try:
            async with httpx.AsyncClient(base_url=gateway.url, timeout=120) as http:
                clients = [
                    MutatingClient(n, Client(http, token), store, account_id, seed + 10 + n, tally)
                    for n, token in enumerate(token_list)
                ]

                async def work() -> None:
                    while not stop.is_set():
                        await workload.step()
                        await asyncio.sleep(workload.rng.uniform(0.05, 0.3))

                async def mutate() -> None:
                    try:
                        await asyncio.gather(*(c.run(MUTATIONS // CLIENTS) for c in clients))
                    finally:
                        stop.set()

                async with asyncio.TaskGroup() as group:
                    group.create_task(mutate())
                    group.create_task(work())
                    group.create_task(killer.run(stop, store))
            run_seconds = time.monotonic() - started
            await other.logout()

            # The workload has stopped; the last sync started runs until every action has ended.
            # (A quiet machine needs about 20 s; a loaded one, where each restarted process did little, more.)
            async with asyncio.timeout(180):
                while await _pending(store, account_id):
                    await asyncio.sleep(0.5)
            settle_seconds = time.monotonic() - started - run_seconds
            # ... and until its passes have caught up with the server: every failure undid its change, and the
            # running sync converges without any help. (Not "once the log stands still for a while": on a loaded
            # machine a pass over every folder can take longer than any such while.)
            converged = await verify(store, credential_box, account_id)
            deadline = time.monotonic() + 60
            while converged and time.monotonic() < deadline:
                await asyncio.sleep(1)
                converged = await verify(store, credential_box, account_id)
            await killer.kill()

            once = await asyncio.create_subprocess_exec(
                INBOXQL, "sync", "--once", "--account", str(account_id), env=_env(settings), stderr=log
            )
            assert await asyncio.wait_for(once.wait(), timeout=120) == 0
        except BaseException:
            print(f"sync log: {log_path}")
            raise
        finally:
            await killer.kill()
            gateway.stop()

    async with store.sessions() as s:
        ended = {
            i: (state, error)
            for i, state, error in await s.execute(
                select(Action.id, Action.state, Action.error).where(Action.account_id == account_id)
            )
        }
        placeholders = await s.scalar(
            select(func.count())
            .select_from(MessagePlace)
            .where(
                MessagePlace.account_id == account_id,
                (MessagePlace.uidvalidity == PLACEHOLDER_UIDVALIDITY) | (MessagePlace.uid <= 0),
            )
        )
        unsettled = list(
            await s.scalars(select(Folder.name).where(Folder.account_id == account_id, Folder.sync_state != "follow"))
        )
        mirror_ids = Counter(
            h for h in await s.scalars(select(Message.message_id_header).where(Message.account_id == account_id)) if h
        )
        places_per_message = Counter(
            await s.scalars(select(MessagePlace.message_id).where(MessagePlace.account_id == account_id))
        )
    states = Counter(state for state, _ in ended.values())
    print(
        f"{sum(tally.sent.values())} mutations ({dict(tally.sent)}), {tally.retries} retries with a key, "
        f"refused: {dict(tally.refused)}; {len(tally.actions)} actions: {dict(states)}; "
        f"{killer.kills} SIGKILLs; {len(workload.log)} workload steps; {run_seconds:.0f} s to seed and under fire, "
        f"{settle_seconds:.0f} s until no action was pending, {time.monotonic() - started:.0f} s in all; failures: "
        f"{dict(Counter((error or '')[:40] for state, error in ended.values() if state == ActionState.FAILED.value))}"
    )
    assert sum(tally.sent.values()) == MUTATIONS
    assert killer.kills >= MIN_KILLS

    # Every action the clients were answered with, and no other, has ended: done, or failed with a reason.
    assert set(ended) == tally.actions
    assert set(states) <= {ActionState.DONE.value, ActionState.FAILED.value}, states
    assert [i for i, (state, error) in ended.items() if state == ActionState.FAILED.value and not error] == []

    # The server equals the mirror (the running sync got there by itself), and the log folds to the mirror.
    assert converged == [], "\n".join(converged[:40])
    await assert_identical(store, credential_box, account_id)
    assert await fold_log(store, account_id) == await mirror_objects(store, account_id)
    assert placeholders == 0
    assert unsettled == []

    # Nothing applied twice: no Message-ID twice on the server (the workload makes no copies) nor in the mirror,
    # and nothing on the server that nobody put there.
    client = await connect(dovecot, user, password)
    try:
        on_server = await _server_message_ids(client)
    finally:
        await client.logout()
    assert {h: n for h, n in on_server.items() if n > 1} == {}
    assert set(on_server) <= seeded | workload.appended
    assert {h: n for h, n in mirror_ids.items() if n > 1} == {}
    assert {m: n for m, n in places_per_message.items() if n > 1} == {}
