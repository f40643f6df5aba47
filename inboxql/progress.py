"""Progress of `inboxql sync --once`: per account and per folder, "x of N" messages and the rate.

The sync core is not asked for progress: this reads what it records (schema.status: the mirror's count beside the
server's, from STATUS or SELECT before the first batch) on a timer, as the gateway's status page does. One read
serves both, the sync core needs no observer threaded through its tasks, and the figures are what was committed,
not what was downloaded: a bar never runs ahead of the mirror.

On a terminal the figures are rich progress bars, with the process's log lines printed above them; elsewhere
(a pipe, a file, a service's journal) they are plain lines, one each time a folder or account moved, at most one
per folder a second, and a last line for each at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import AsyncIterator, Sequence
from typing import Protocol, TextIO

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text
from sqlalchemy.ext.asyncio import AsyncEngine

from schema import status
from schema.db import session_factory

INTERVAL = 0.5  # seconds between reads


class View(Protocol):
    def show(self, snap: status.Snapshot) -> None: ...

    def close(self, snap: status.Snapshot | None) -> None: ...


class _Count(ProgressColumn):
    """ "250 of 1,000" (rich's MofNCompleteColumn shows no thousands separator, and nothing for an unknown N)."""

    def render(self, task: Task) -> Text:
        total = int(task.total) if task.total is not None else None
        return Text(status.progress_text(int(task.completed), total), style="progress.download")


class _Rate(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if not speed and task.elapsed:
            # rich estimates a speed from two updates at least; a folder mirrored in one step after its first
            # batch has one: its rate over the run instead.
            moved = task.completed - task.fields.get("first", task.completed)
            speed = moved / task.elapsed if moved > 0 else None
        return Text(f"{speed:,.0f} msg/s" if speed else "", style="progress.data.speed")


class BarsView:
    """One bar per account (its folders summed) and one per folder beneath it."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=30),
            _Count(),
            _Rate(),
            TimeElapsedColumn(),
            console=console,
            refresh_per_second=4,
        )
        self.tasks: dict[tuple[int, int | None], TaskID] = {}
        self.progress.start()

    def _task(self, key: tuple[int, int | None], description: str, mirrored: int, total: int | None) -> None:
        task = self.tasks.get(key)
        if task is None:
            # Started at the mirror's count: what earlier runs mirrored counts toward the bar, not toward the rate.
            self.tasks[key] = self.progress.add_task(description, total=total, completed=mirrored, first=mirrored)
            return
        self.progress.update(task, description=description, total=total, completed=mirrored)

    def show(self, snap: status.Snapshot) -> None:
        for a in snap.accounts:
            state = a.sync_state if not a.sync_error else f"{a.sync_state}: {a.sync_error[:60]}"
            self._task((a.id, None), f"[bold]{a.address}[/] ({state})", a.mirrored, a.server_count)
            for f in a.folders:
                name = f"  {f.name}" + (f" [red]({f.sync_error[:40]})[/]" if f.sync_error else "")
                self._task((a.id, f.id), name, f.mirrored, f.server_count)

    def close(self, snap: status.Snapshot | None) -> None:
        if snap is not None:
            self.show(snap)
        self.progress.refresh()
        self.progress.stop()


class LinesView:
    """Plain lines: `account 1 me@example.com INBOX: 250 of 1,000 messages (412 msg/s)`, and for the account
    `account 1 me@example.com: 250 of 1,020 messages, syncing`."""

    def __init__(self, out: TextIO, every: float = 1.0) -> None:
        self.out = out
        self.every = every
        # Per account (folder None) and folder: what was printed last, and when (monotonic).
        self.printed: dict[tuple[int, int | None], tuple[str, int, float]] = {}
        self.started: dict[tuple[int, int | None], tuple[int, float]] = {}
        # When the first snapshot was shown: an account or folder first seen after it appeared during the run
        # (discovered, added) and had nothing mirrored before, however far its sync got before it was first seen.
        self.began = 0.0
        self.first_snapshot = True

    def _line(self, key: tuple[int, int | None], label: str, text: str, mirrored: int, *, final: bool) -> None:
        now = time.monotonic()
        if key not in self.started:
            self.started[key] = (mirrored, now) if self.first_snapshot else (0, self.began)
        first, since = self.started[key]
        before = self.printed.get(key)
        if final:
            # The last word on what moved during the run (with its rate over the whole run), and on what changed
            # since it was last printed; nothing again for the rest.
            if mirrored == first and before is not None and before[0] == text:
                return
            rate = (
                f" ({(mirrored - first) / (now - since):,.0f} msg/s over {now - since:.1f} s)"
                if mirrored > first
                else ""
            )
        else:
            if before is not None and (before[0] == text or now - before[2] < self.every):
                return
            rate = ""
            if before is not None and mirrored > before[1]:
                rate = f" ({(mirrored - before[1]) / (now - before[2]):,.0f} msg/s)"
        print(f"{label}: {text}{rate}", file=self.out, flush=True)
        self.printed[key] = (text, mirrored, now)

    def _all(self, snap: status.Snapshot, *, final: bool) -> None:
        self.first_snapshot = not self.began
        if self.first_snapshot:
            self.began = time.monotonic()
        for a in snap.accounts:
            label = f"account {a.id} {a.address}"
            error = f": {' '.join(a.sync_error.split())}" if a.sync_error else ""
            self._line((a.id, None), label, f"{a.progress} messages, {a.sync_state}{error}", a.mirrored, final=final)
            for f in a.folders:
                ferror = f", {' '.join(f.sync_error.split())}" if f.sync_error else ""
                self._line((a.id, f.id), f"{label} {f.name}", f"{f.progress} messages{ferror}", f.mirrored, final=final)

    def show(self, snap: status.Snapshot) -> None:
        self._all(snap, final=False)

    def close(self, snap: status.Snapshot | None) -> None:
        if snap is not None:
            self._all(snap, final=True)


async def _read(engine: AsyncEngine, only: Sequence[int] | None) -> status.Snapshot:
    async with session_factory(engine)() as session:
        return await status.snapshot(session, only)


async def _poll(engine: AsyncEngine, only: Sequence[int] | None, view: View, interval: float) -> None:
    while True:
        try:
            view.show(await _read(engine, only))
        except Exception as exc:  # a view of progress never stops the sync: MySQL may be restarting
            logging.getLogger("inboxql").debug("progress not read: %s", type(exc).__name__)
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def shown(
    engine: AsyncEngine, only: Sequence[int] | None, out: TextIO | None = None, *, interval: float = INTERVAL
) -> AsyncIterator[None]:
    """Show the progress of the accounts `only` (every account: None) on `out` (stdout) while the block runs."""
    out = out or sys.stdout
    root = logging.getLogger()
    saved = root.handlers[:]
    view: View
    if out.isatty():
        console = Console(file=out)
        view = BarsView(console)
        if sys.stderr.isatty():
            # Log lines go above the bars instead of through them (both streams are the same terminal).
            root.handlers = [RichHandler(console=console, show_path=False, markup=False)]
    else:
        view = LinesView(out)
    poller = asyncio.create_task(_poll(engine, only, view, interval), name="progress")
    last: status.Snapshot | None = None
    try:
        yield
    finally:
        poller.cancel()
        await asyncio.gather(poller, return_exceptions=True)
        with contextlib.suppress(Exception):
            last = await _read(engine, only)
        view.close(last)
        root.handlers = saved
