"""The MIME worker pool survives its workers: one killed (the OOM killer's SIGKILL) is replaced and the batch runs
again, for the account that saw it and every other."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from inboxql.devmail import DovecotServer
from inboxql.mailgen import generate
from schema.crypto import CredentialBox
from schema.unit import Store
from synccore.account import AccountSync, Tuning
from synccore.parsing import THREAD_BYTES, ParsePool, WorkerCrashed
from synccore.prepare import prepare_many
from tests.sync.support import add_account, assert_identical


def _workers() -> set[int]:
    """This process's parse workers: the children of its fork server (`python -c "from multiprocessing.forkserver
    import main; ..."`, a child of this process), whose command line they keep."""
    processes: dict[int, tuple[int, bytes]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        processes[int(entry.name)] = (int(stat.rsplit(")", 1)[1].split()[1]), cmdline)
    servers = {pid for pid, (ppid, cmdline) in processes.items() if ppid == os.getpid() and b"forkserver" in cmdline}
    return {pid for pid, (ppid, _) in processes.items() if ppid in servers}


async def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    async with asyncio.timeout(10):
        while pid in _workers():
            await asyncio.sleep(0.02)


@pytest.fixture
def pool() -> Iterator[ParsePool]:
    parser = ParsePool(1)
    yield parser
    parser.close()


async def test_a_killed_idle_worker_is_replaced_and_the_batch_parsed(pool: ParsePool) -> None:
    raws = list(generate(40, seed=71))
    expected = [p.digest for p in prepare_many(raws)]
    assert [p.digest for p in await pool.prepare(raws)] == expected
    (worker,) = _workers()
    await _kill(worker)

    assert [p.digest for p in await pool.prepare(raws)] == expected
    assert pool.rebuilds == 1
    (replacement,) = _workers()
    assert replacement != worker


async def test_a_worker_leaves_ctrl_c_to_the_sync_process(pool: ParsePool) -> None:
    """Ctrl-C reaches the terminal's whole process group; the sync process shuts the pool down itself."""
    raws = list(generate(40, seed=75))
    expected = [p.digest for p in prepare_many(raws)]
    await pool.prepare(raws)
    (worker,) = _workers()
    os.kill(worker, signal.SIGINT)
    await asyncio.sleep(0.5)
    assert _workers() == {worker}
    assert [p.digest for p in await pool.prepare(raws)] == expected
    assert pool.rebuilds == 0


async def test_a_worker_killed_in_the_middle_of_a_batch_is_replaced_and_the_batch_parsed(pool: ParsePool) -> None:
    raws = list(generate(1500, seed=72)) * 3
    expected = [p.digest for p in prepare_many(raws)]
    await pool.prepare(raws[:8])  # the worker is up
    (worker,) = _workers()
    batch = asyncio.create_task(pool.prepare(raws))
    await asyncio.sleep(0.1)  # it is parsing (4,500 messages take the worker over a second)
    assert not batch.done()
    await _kill(worker)

    assert [p.digest for p in await batch] == expected
    assert pool.rebuilds == 1


async def test_an_account_syncs_after_the_shared_worker_was_killed(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str], pool: ParsePool
) -> None:
    user, password = mail_user
    dovecot.append(user, password, "INBOX", list(generate(30, seed=73)))
    account_id = await add_account(store, credential_box, dovecot, user, password)
    await pool.prepare(list(generate(8, seed=74)))  # another account's batch started the worker
    (worker,) = _workers()
    await _kill(worker)

    # Listed first (no newest batch parsed on the event loop): every batch of the 30 goes to the pool.
    await AccountSync(store, credential_box, account_id, Tuning(first_batch=0), pool).run_once()
    await assert_identical(store, credential_box, account_id)
    assert pool.rebuilds == 1


async def test_a_batch_that_kills_the_new_worker_too_fails_alone_and_the_pool_goes_on(pool: ParsePool) -> None:
    """As a message that exhausts memory would: the batch fails (its folder is retried later), the others parse."""
    # Large enough that each worker is still parsing it when killed (0.3 s after it got it) on a quiet machine too:
    # 1,500 messages could be done by then, and with no retry to run, no second worker came.
    raws = list(generate(5000, seed=75))
    await pool.prepare(raws[:8])
    (first,) = _workers()
    batch = asyncio.create_task(pool.prepare(raws))
    await asyncio.sleep(0.3)
    await _kill(first)
    async with asyncio.timeout(30):  # the retry runs on a new worker
        while not (_workers() - {first}):
            await asyncio.sleep(0.02)
    (second,) = _workers() - {first}
    await asyncio.sleep(0.3)
    assert not batch.done()
    await _kill(second)

    with pytest.raises(WorkerCrashed):
        await batch
    assert pool.rebuilds == 2
    few = list(generate(20, seed=76))
    assert [p.digest for p in await pool.prepare(few)] == [p.digest for p in prepare_many(few)]


async def test_one_large_message_is_parsed_by_a_worker_not_on_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches are sized by bytes, so a 20 MiB message comes alone: parsed inline, it would hold the loop (every
    IDLE, the write-back, the other accounts) for seconds."""
    sent: list[int] = []
    run = ParsePool._run

    async def counting(self: ParsePool, pool: object, raws: list[bytes]) -> object:
        sent.append(len(raws))
        return await run(self, pool, raws)  # type: ignore[arg-type]

    monkeypatch.setattr(ParsePool, "_run", counting)
    small = list(generate(3, seed=4))
    large = small[0] + b"\r\n" + b"x" * 76 * 10_000  # 760 KB of body
    pool = ParsePool(1)
    try:
        assert [p.parsed.subject for p in await pool.prepare(small)] == [p.parsed.subject for p in prepare_many(small)]
        assert sent == []  # three small messages: inline
        [parsed] = await pool.prepare([large])
        assert sent == [1]  # one large one: a worker
        assert parsed.parsed.subject == prepare_many([large])[0].parsed.subject
    finally:
        pool.close()


async def test_one_very_large_message_is_parsed_in_a_thread_while_the_loop_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sent to a worker, its bytes would be copied four more times (pickled and piped both ways)."""
    sent: list[int] = []
    run = ParsePool._run

    async def counting(self: ParsePool, pool: object, raws: list[bytes]) -> object:
        sent.append(len(raws))
        return await run(self, pool, raws)  # type: ignore[arg-type]

    monkeypatch.setattr(ParsePool, "_run", counting)
    [head] = list(generate(1, seed=5))
    huge = head + b"\r\n" + b"y" * 76 * (THREAD_BYTES // 76 + 1000)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    pool = ParsePool(1)
    ticking = asyncio.create_task(ticker())
    try:
        await asyncio.sleep(0)
        before = ticks
        [parsed] = await pool.prepare([huge])
        assert ticks > before + 1  # the loop ran other tasks while the message was parsed
        assert sent == []
        assert parsed == prepare_many([huge])[0]
    finally:
        ticking.cancel()
        pool.close()


def test_a_worker_does_not_import_what_the_main_script_imports(tmp_path: Path) -> None:
    """`inboxql sync` runs from a console script that imports the whole command line; multiprocessing ran that
    script again in every parse worker. A script like it, run in a process of its own, asks its worker which
    modules it holds: the parser's, not the script's."""
    script = tmp_path / "like_the_console_script.py"
    script.write_text(
        "import sys\n"
        "import inboxql.cli\n"
        "from synccore.parsing import ParsePool\n"
        "if __name__ == '__main__':\n"
        "    pool = ParsePool(1)\n"
        "    assert pool._pool is not None\n"
        "    held = pool._pool.submit(eval, 'sorted(__import__(\"sys\").modules)').result(timeout=60)\n"
        "    pool.close()\n"
        "    print(' '.join(held))\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2]
    )
    assert done.returncode == 0, done.stderr
    held = set(done.stdout.split())
    assert "synccore.prepare" in held
    assert not held & {"inboxql.cli", "sqlalchemy", "redis"}, sorted(held & {"inboxql.cli", "sqlalchemy", "redis"})
