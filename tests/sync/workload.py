"""A random mail workload on a second IMAP connection: what other clients do while inboxql syncs."""

from __future__ import annotations

import random
from collections.abc import Iterator

from inboxql.mailgen import generate
from synccore.imap import CommandFailed, ImapClient, StoreAction

KEYWORDS = ("$Label1", "$Important", "work", "urgent")
SYSTEM_FLAGS = ("\\Seen", "\\Flagged", "\\Answered", "\\Draft")
ACTIONS: tuple[StoreAction, ...] = ("add", "remove", "set")
FOLDER_NAMES = ("Projects", "Receipts 2026", "Entwürfe alt", "Lists/python", "日本語")


class Workload:
    def __init__(self, client: ImapClient, seed: int) -> None:
        self.client = client
        self.rng = random.Random(seed)
        self.mail: Iterator[bytes] = generate(100_000, seed=seed)
        self.folders = ["INBOX", "Archive"]
        self.log: list[str] = []

    async def step(self) -> None:
        ops = [
            (self.append, 30),
            (self.store, 25),
            (self.move, 10),
            (self.copy, 6),
            (self.expunge, 8),
            (self.create, 3),
            (self.rename, 2),
            (self.delete, 1),
        ]
        op = self.rng.choices([o for o, _ in ops], weights=[w for _, w in ops])[0]
        try:
            await op()
        except CommandFailed as exc:  # e.g. a folder that another step just renamed: fine for a workload
            self.log.append(f"{op.__name__} refused: {exc}")

    async def _uids(self, folder: str) -> list[int]:
        await self.client.select(folder)
        return await self.client.uid_search("ALL")

    def _some(self, uids: list[int]) -> list[int]:
        return self.rng.sample(uids, k=min(len(uids), self.rng.randint(1, 4)))

    async def append(self) -> None:
        folder = self.rng.choice(self.folders)
        flags = [f for f in (*SYSTEM_FLAGS[:2], *KEYWORDS[:2]) if self.rng.random() < 0.3]
        await self.client.append(folder, next(self.mail), flags)
        self.log.append(f"append {folder}")

    async def store(self) -> None:
        folder = self.rng.choice(self.folders)
        uids = await self._uids(folder)
        if not uids:
            return
        flags = self.rng.sample([*SYSTEM_FLAGS, *KEYWORDS], k=self.rng.randint(1, 2))
        action = self.rng.choice(ACTIONS)
        await self.client.uid_store(self._some(uids), action, flags)
        self.log.append(f"store {folder} {action} {flags}")

    async def move(self) -> None:
        src, dst = self.rng.sample(self.folders, 2) if len(self.folders) > 1 else (None, None)
        if src is None or dst is None:
            return
        uids = await self._uids(src)
        if uids:
            await self.client.uid_move(self._some(uids), dst)
            self.log.append(f"move {src} -> {dst}")

    async def copy(self) -> None:
        src, dst = self.rng.sample(self.folders, 2)
        uids = await self._uids(src)
        if uids:
            await self.client.uid_copy(self._some(uids), dst)
            self.log.append(f"copy {src} -> {dst}")

    async def expunge(self) -> None:
        folder = self.rng.choice(self.folders)
        uids = await self._uids(folder)
        if uids:
            chosen = self._some(uids)
            await self.client.uid_store(chosen, "add", ["\\Deleted"])
            await self.client.uid_expunge(chosen)
            self.log.append(f"expunge {folder}")

    async def create(self) -> None:
        free = [n for n in FOLDER_NAMES if n not in self.folders]
        if free:
            name = self.rng.choice(free)
            await self.client.create(name)
            self.folders.append(name)
            self.log.append(f"create {name}")

    async def rename(self) -> None:
        mine = [n for n in self.folders if n not in ("INBOX", "Archive")]
        free = [n for n in FOLDER_NAMES if n not in self.folders]
        if mine and free:
            old, new = self.rng.choice(mine), self.rng.choice(free)
            await self.client.unselect() if self.client.selected else None
            await self.client.rename(old, new)
            self.folders[self.folders.index(old)] = new
            self.log.append(f"rename {old} -> {new}")

    async def delete(self) -> None:
        mine = [n for n in self.folders if n not in ("INBOX", "Archive")]
        if mine:
            name = self.rng.choice(mine)
            await self.client.unselect() if self.client.selected else None
            await self.client.delete(name)
            self.folders.remove(name)
            self.log.append(f"delete {name}")
