"""What a parse worker runs: a fetched message parsed (mime), named and packed (schema.packing).

This module is what the worker processes import, and all they import: the MIME parser and the standard
library. synccore.parsing starts them from a fork server that preloads this module alone, so a worker neither
runs the `inboxql` script's imports again (spawn's main-module fix-up: SQLAlchemy, redis, the models) nor
imports the database layer. A worker was about 80 MiB of RSS, most of it those imports (BENCHMARKS.md, Memory
and size).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from mime import ParsedMessage, parse_message
from schema import packing


@dataclass(frozen=True, slots=True)
class Prepared:
    parsed: ParsedMessage
    digest: bytes
    codec: str
    packed: bytes


def prepare(raw: bytes) -> Prepared:
    codec, packed = packing.pack(raw)
    return Prepared(parse_message(raw), packing.digest(raw), codec, packed)


def prepare_many(raws: Sequence[bytes]) -> list[Prepared]:
    return [prepare(raw) for raw in raws]


def worker_started(sync_pid: int) -> None:
    """In a worker: end this process when the sync process `sync_pid` is gone, and leave Ctrl-C to it.

    A SIGKILLed sync process runs no shutdown, and its workers would run on forever: the fork server that forked
    them lives as long as any process holds its liveness pipe, and every worker holds it (multiprocessing hands
    it to each child it forks), so the server never ends and a worker cannot wait for it either. A worker looks
    for the sync process itself (gone, or a zombie waiting to be reaped) every half second; once the workers are
    gone, the server and multiprocessing's resource tracker end too. Ctrl-C at a terminal interrupts the whole
    foreground process group: a worker that took it died with a KeyboardInterrupt traceback across the user's
    screen while the sync process was shutting down in order.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while _alive(sync_pid):
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-sync", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: the pid was reused, ours is gone
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:  # no /proc: the signal's answer is all there is
        return True
