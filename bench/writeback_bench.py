"""Write-back and sending: mutations through the API against the same change made directly over IMAP or SMTP.

    .venv/bin/python -m bench.writeback_bench [--messages 1400] [--samples 100] [--parts abc] [--rounds 1]

Set-up: a private Dovecot with a seeded mailbox, a fresh database, `inboxql sync --once`, then `inboxql sync`
(following) and `inboxql gateway` as processes of their own, and a private Postfix delivering into the Dovecot.
A bare IDLE client on INBOX (its own raw socket) is the observer for (a), and one on the recipient's INBOX for (c).

  (a) flag latency: `updateMessages(starred:)` over HTTP until the IDLE client sees `* n FETCH (FLAGS ...)`,
      beside a direct `UID STORE` from a plain IMAP connection until the same IDLE client sees it. Interleaved,
      one message each. Goal: within 50 ms of the direct STORE at p99.
  (b) 1,000 flag changes: through the API (one mutation of 1,000 ids; and 100 mutations of 10 ids from 4
      concurrent clients) until every action is done (the server answered OK), beside one pipelined batch of
      1,000 `UID STORE` commands from a plain connection until its last tagged OK. Goal: within 2x.
  (c) sending: `sendMessage` (undo window 0) until the recipient's IDLE client sees EXISTS, beside a direct SMTP
      submission (aiosmtplib, STARTTLS + AUTH) of a message of the same size to the same Postfix. Goal: within
      100 ms at p99.

Dovecot holds IDLE notifications of other connections' changes back about half a second (FIELD-NOTES), so both
columns of (a) and (c) carry that floor; the difference is what inboxql adds. The half second is a window that the
first change opens (its NOTIFY_DELAY_MSECS timer), and the recipient's session opens one itself when it reports a
new message: a delivery within 500 ms of the previous EXISTS is reported when that window ends, not 500 ms after it
arrived. Sends 0.2-0.4 s apart put the faster path (the direct one) in the window and the slower one often past it,
a +500 ms that measured the window, not inboxql (BENCHMARKS.md). (c) waits out the window after each sample, so
every delivery is reported 500 ms after it arrived, in both columns.

In (a) and (c) each side's first round is a warm-up, printed on a line of its own and left out of the
percentiles: the direct client's connection is opened (and INBOX selected) before it, while inboxql's executor
opens its IMAP connection at the first write-back after start, and the gateway builds its first statements. With
50 samples a side, p99 is the slowest sample, which that one cold round would otherwise be.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import re
import secrets
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench import common
from bench.common import BenchError, ms
from bench.push_bench import RawImap
from gateway.ids import to_global
from inboxql.devmail import DovecotServer, free_port
from inboxql.devsmtp import PostfixServer

_FETCH_FLAGS = re.compile(rb"^\* (\d+) FETCH \(.*FLAGS \(([^)]*)\)")
_EXISTS = re.compile(rb"^\* (\d+) EXISTS")
STEP_TIMEOUT = 20.0
UPDATE = """mutation($input: UpdateMessagesInput!) { updateMessages(input: $input) { actions { id state } } }"""
SEND = """mutation($input: SendMessageInput!) { sendMessage(input: $input) { outbox { id state } } }"""


@dataclass
class Watch:
    """What a bare IDLE client saw: FETCH flags by sequence number, EXISTS counts, with their times."""

    flags: list[tuple[float, int, bytes]] = field(default_factory=list)
    exists: list[tuple[float, int]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def until(self, check: Callable[[], float | None]) -> float | None:
        deadline = time.monotonic() + STEP_TIMEOUT
        while (found := check()) is None:
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)
        return found


async def idle(server: DovecotServer, user: str, password: str, watch: Watch, ready: asyncio.Event) -> None:
    conn = await RawImap.open(server, user, password)
    try:
        for line in await conn.command(b"SELECT INBOX"):
            if m := _EXISTS.match(line):
                watch.exists.append((time.monotonic(), int(m.group(1))))
        conn.writer.write(b"idle IDLE\r\n")
        await conn.writer.drain()
        await conn.reader.readline()  # + idling
        ready.set()
        while line := await conn.reader.readline():
            now = time.monotonic()
            if m := _FETCH_FLAGS.match(line):
                watch.flags.append((now, int(m.group(1)), m.group(2)))
            elif m := _EXISTS.match(line):
                watch.exists.append((now, int(m.group(1))))
            watch.changed.set()
        raise BenchError("the bare IDLE connection closed")
    finally:
        await conn.close()


def _flag_seen(watch: Watch, seq: int, flagged: bool, since: float) -> Callable[[], float | None]:
    def check() -> float | None:
        for at, n, flags in watch.flags:
            if at >= since and n == seq and (b"\\Flagged" in flags) == flagged:
                return at
        return None

    return check


class Api:
    def __init__(self, url: str, token: str) -> None:
        self.http = httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)

    async def run(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        response = await self.http.post("/graphql", json={"query": query, "variables": variables})
        body: dict[str, Any] = response.json()
        if body.get("errors"):
            raise BenchError(f"GraphQL errors: {body['errors']}")
        data: dict[str, Any] = body["data"]
        return data


async def _inbox(engine: AsyncEngine, account_id: int) -> list[tuple[int, int]]:
    """(uid, message id) of INBOX, by UID: the sequence number of the n-th is n."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT p.uid, p.message_id FROM message_places p JOIN folders f ON f.id = p.folder_id "
                "WHERE f.account_id = :a AND f.role = 'inbox' AND p.uid > 0 ORDER BY p.uid"
            ),
            {"a": account_id},
        )
        return [(int(uid), int(mid)) for uid, mid in rows]


async def _actions_done(engine: AsyncEngine, ids: Sequence[int]) -> bool:
    async with engine.connect() as conn:
        left = (
            await conn.execute(
                text(f"SELECT COUNT(*) FROM actions WHERE state = 'pending' AND id IN ({','.join(map(str, ids))})")
            )
        ).scalar()
    return left == 0


async def latency(
    api: Api, direct: RawImap, watch: Watch, inbox: list[tuple[int, int]], samples: int, rng: random.Random
) -> tuple[list[float], list[float], int]:
    picks = rng.sample(range(len(inbox)), 2 * samples + 2)
    ours: list[float] = []
    theirs: list[float] = []
    misses = 0
    for n in range(samples + 1):
        for kind, index in (("api", picks[2 * n]), ("direct", picks[2 * n + 1])):
            uid, message_id = inbox[index]
            seq = index + 1
            start = time.monotonic()
            if kind == "api":
                await api.run(UPDATE, {"input": {"ids": [to_global("Message", message_id)], "starred": True}})
            else:
                await direct.command(f"UID STORE {uid} +FLAGS.SILENT (\\Flagged)".encode())
            seen = await watch.until(_flag_seen(watch, seq, True, start))
            _record(n, kind, seen, start, ours, theirs)
            misses += seen is None
            await asyncio.sleep(rng.uniform(0.2, 0.4))
    return ours, theirs, misses


def _record(n: int, kind: str, seen: float | None, start: float, ours: list[float], theirs: list[float]) -> None:
    """A sample into its column; round 0 is the warm-up (module docstring), printed and not counted."""
    if seen is None:
        return
    if n == 0:
        print(f"  warm-up round, {'inboxql' if kind == 'api' else 'direct'}: {1000 * (seen - start):.0f} ms")
    else:
        (ours if kind == "api" else theirs).append(seen - start)


async def _clear_flags(direct: RawImap, engine: AsyncEngine, account_id: int) -> None:
    """Unflag INBOX on the server directly, then wait until the mirror agrees (and nothing is pending), so the
    next round's mutations really change something."""
    await direct.command(b"UID STORE 1:* -FLAGS.SILENT (\\Flagged)")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        async with engine.connect() as conn:
            left = (
                await conn.execute(
                    text(
                        "SELECT (SELECT COUNT(*) FROM messages m JOIN message_places p ON p.message_id = m.id "
                        "JOIN folders f ON f.id = p.folder_id WHERE f.account_id = :a AND f.role = 'inbox' "
                        "AND m.starred = 1), "
                        "(SELECT COUNT(*) FROM actions WHERE account_id = :a AND state = 'pending')"
                    ),
                    {"a": account_id},
                )
            ).one()
        if tuple(left) == (0, 0):
            return
        await asyncio.sleep(0.2)
    raise BenchError(f"the mirror did not see the flags cleared in 120 s (starred, pending actions: {tuple(left)})")


async def _action_ids(engine: AsyncEngine, since: int) -> list[int]:
    async with engine.connect() as conn:
        return [int(i) for (i,) in await conn.execute(text("SELECT id FROM actions WHERE id > :s"), {"s": since})]


async def _newest_action(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT COALESCE(MAX(id), 0) FROM actions"))).scalar() or 0)


async def _timed(work: Callable[[], Awaitable[None]], engine: AsyncEngine) -> tuple[float, float]:
    """Seconds from the first request until the last answer, and until every action queued is done."""
    before = await _newest_action(engine)
    start = time.monotonic()
    await work()
    answered = time.monotonic() - start
    ids = await _action_ids(engine, before)
    while not await _actions_done(engine, ids):
        await asyncio.sleep(0.005)
    return answered, time.monotonic() - start


async def throughput(
    api: Api, direct: RawImap, engine: AsyncEngine, account_id: int, inbox: list[tuple[int, int]]
) -> tuple[float, tuple[float, float], tuple[float, float]]:
    uids = [uid for uid, _ in inbox[:1000]]
    gids = [to_global("Message", mid) for _, mid in inbox[:1000]]
    # The baseline: 1,000 UID STOREs written at once, then their 1,000 tagged OKs read.
    tags = [f"s{n}".encode() for n in range(len(uids))]
    start = time.monotonic()
    direct.writer.write(
        b"".join(
            tag + f" UID STORE {uid} +FLAGS.SILENT (\\Flagged)\r\n".encode()
            for tag, uid in zip(tags, uids, strict=True)
        )
    )
    await direct.writer.drain()
    left = set(tags)
    while left:
        line = await asyncio.wait_for(direct.reader.readline(), 60)
        tag = line.split(b" ", 1)[0]
        if tag in left:
            if not line.startswith(tag + b" OK"):
                raise BenchError(f"STORE failed: {line!r}")
            left.discard(tag)
    pipelined = time.monotonic() - start
    await _clear_flags(direct, engine, account_id)

    async def one_call() -> None:
        await api.run(UPDATE, {"input": {"ids": gids, "starred": True}})

    single = await _timed(one_call, engine)
    await _clear_flags(direct, engine, account_id)

    async def many_calls() -> None:
        chunks = [gids[i : i + 10] for i in range(0, len(gids), 10)]

        async def client(part: Sequence[list[str]]) -> None:
            for ids in part:
                await api.run(UPDATE, {"input": {"ids": ids, "starred": True}})

        await asyncio.gather(*(client(chunks[i::4]) for i in range(4)))

    many = await _timed(many_calls, engine)
    await _clear_flags(direct, engine, account_id)
    return pipelined, single, many


def _message(sender: str, to: str, body: str) -> bytes:
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: bench {secrets.token_hex(4)}\r\n"
        f"Message-ID: <{secrets.token_hex(12)}@inboxql.test>\r\n\r\n{body}\r\n"
    ).encode()


async def sending(
    api: Api,
    server: DovecotServer,
    postfix: PostfixServer,
    account_gid: str,
    sender: tuple[str, str],
    watch: Watch,
    recipient: str,
    samples: int,
    rng: random.Random,
) -> tuple[list[float], list[float], int]:
    ours: list[float] = []
    theirs: list[float] = []
    misses = 0
    tls = ssl.create_default_context(cafile=str(server.ca_file))
    body = "x" * 2000
    for n in range(samples + 1):
        for kind in ("api", "direct"):
            count = watch.exists[-1][1] if watch.exists else 0
            start = time.monotonic()
            if kind == "api":
                payload = {"accountId": account_gid, "to": [{"address": recipient}], "subject": "bench", "text": body}
                await api.run(SEND, {"input": payload})
            else:
                async with aiosmtplib.SMTP(
                    hostname=postfix.host, port=postfix.port, start_tls=True, tls_context=tls
                ) as smtp:
                    await smtp.login(*sender)
                    await smtp.sendmail(server.address(sender[0]), [recipient], _message(sender[0], recipient, body))

            def arrived(since: float = start, above: int = count) -> float | None:
                return next((at for at, n in watch.exists if at >= since and n > above), None)

            seen = await watch.until(arrived)
            _record(n, kind, seen, start, ours, theirs)
            misses += seen is None
            await asyncio.sleep(rng.uniform(0.6, 0.8))  # past the recipient's window (above)
    return ours, theirs, misses


async def _wait_http(url: str, proc: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(300):
            if proc.poll() is not None:
                raise BenchError(f"inboxql gateway exited {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"{url}/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise BenchError("the gateway did not answer /healthz in 30 s")


async def _wait_ready(engine: AsyncEngine, account_id: int) -> None:
    for _ in range(600):
        async with engine.connect() as conn:
            state = (
                await conn.execute(text("SELECT sync_state FROM accounts WHERE id = :a"), {"a": account_id})
            ).scalar()
        if state == "ready":
            return
        await asyncio.sleep(0.1)
    raise BenchError("the follower did not reach 'ready' in 60 s")


def _row(label: str, ours: Sequence[float], theirs: Sequence[float]) -> None:
    print(f"{label:<44} {ms(ours, 50)} {ms(ours, 99)}   {ms(theirs, 50)} {ms(theirs, 99)}")
    if ours and theirs:
        d50 = 1000 * (common.percentile(ours, 50) - common.percentile(theirs, 50))
        d99 = 1000 * (common.percentile(ours, 99) - common.percentile(theirs, 99))
        print(f"{'  inboxql minus direct':<44} {d50:7.0f} {d99:7.0f}")


async def _outbox_states(engine: AsyncEngine, account_id: int) -> str:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT state, COUNT(*), MAX(error) FROM outbox WHERE account_id = :a GROUP BY state"),
            {"a": account_id},
        )
        return "; ".join(f"{state} {count}" + (f" ({error[:200]})" if error else "") for state, count, error in rows)


async def run_async(m: common.Synced, samples: int, postfix: PostfixServer, parts: str, rounds: int) -> None:
    rng = random.Random(8)
    env = common.cli_env(m.url)
    engine = create_async_engine(m.url)
    # The account sends through the private Postfix (STARTTLS, the Dovecot's test CA), as --smtp-url would set.
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE accounts SET smtp_host = :h, smtp_port = :p, smtp_security = 'starttls', tls_ca_file = :ca, "
                "address = :address WHERE id = :a"
            ),
            {
                "h": postfix.host,
                "p": postfix.port,
                "ca": str(m.server.ca_file),
                "address": m.server.address(m.user),
                "a": m.account_id,
            },
        )
    token = common.run_cli(["token", "create", "--account", str(m.account_id)], env).strip()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    logs = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    gw_env = {**env, "INBOXQL_GATEWAY_UNDO_SEND_SECONDS": "0", "INBOXQL_GATEWAY_RATE_LIMIT_POINTS": "100000000"}
    follower = subprocess.Popen([*common.inboxql_command(), "sync"], env=env, stderr=logs)
    gateway = subprocess.Popen(
        [*common.inboxql_command(), "gateway", "--port", str(port)],
        env=gw_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    recipient_user, recipient_password = common.new_user(m.server)
    tasks: list[asyncio.Task[None]] = []
    api = Api(url, token)
    direct = await RawImap.open(m.server, m.user, m.password)
    try:
        await _wait_http(url, gateway)
        await _wait_ready(engine, m.account_id)
        await direct.command(b"SELECT INBOX")
        watch, ready = Watch(), asyncio.Event()
        tasks.append(asyncio.create_task(idle(m.server, m.user, m.password, watch, ready)))
        inbox_of_b, ready_b = Watch(), asyncio.Event()
        tasks.append(asyncio.create_task(idle(m.server, recipient_user, recipient_password, inbox_of_b, ready_b)))
        await asyncio.wait_for(asyncio.gather(ready.wait(), ready_b.wait()), 30)
        inbox = await _inbox(engine, m.account_id)
        if len(inbox) < 1000 + 2 * samples + 2:
            raise BenchError(f"INBOX holds {len(inbox)} messages: seed more (--messages)")

        print(f"\n{'':<44} {'inboxql':>15}   {'direct':>15}")
        print(f"{'ms':<44} {'p50':>7} {'p99':>7}   {'p50':>7} {'p99':>7}")
        if "a" in parts:
            await _clear_flags(direct, engine, m.account_id)  # the seeded mailbox has starred messages
            ours, theirs, misses = await latency(api, direct, watch, inbox[:-1000], samples, rng)
            _row(f"(a) flag -> other client's IDLE ({samples}+{samples})", ours, theirs)
            if misses:
                print(f"  misses (nothing seen in {STEP_TIMEOUT:.0f} s): {misses}")
            await _clear_flags(direct, engine, m.account_id)
        if "b" in parts:
            ratios: list[tuple[float, float]] = []
            for n in range(rounds):
                pipelined, single, many = await throughput(api, direct, engine, m.account_id, inbox[-1000:])
                print(f"\n(b) 1,000 flag changes applied on the server{f', round {n + 1}' if rounds > 1 else ''}")
                print(f"  direct: one pipelined batch of 1,000 UID STORE   {1000 * pipelined:7.0f} ms")
                for label, (answered, took) in (
                    ("one mutation of 1,000 ids", single),
                    ("100 mutations of 10 ids, 4 clients", many),
                ):
                    print(
                        f"  inboxql: {label:<38} {1000 * took:7.0f} ms   {took / pipelined:5.2f}x"
                        f"   (answered after {1000 * answered:.0f} ms)"
                    )
                ratios.append((single[1] / pipelined, many[1] / pipelined))
            if rounds > 1:
                one, hundred = (sorted(r[i] for r in ratios) for i in (0, 1))
                print(
                    f"\n(b) over {rounds} rounds, ratio to the direct batch: one mutation median "
                    f"{statistics.median(one):.2f}x (range {one[0]:.2f}-{one[-1]:.2f}x, "
                    f"{sum(r <= 2 for r in one)} of {rounds} within 2x); 100 mutations median "
                    f"{statistics.median(hundred):.2f}x (range {hundred[0]:.2f}-{hundred[-1]:.2f}x)"
                )
        if "c" in parts:
            account_gid = to_global("Account", m.account_id)
            ours, theirs, misses = await sending(
                api, m.server, postfix, account_gid, (m.user, m.password), inbox_of_b,
                m.server.address(recipient_user), samples, rng,
            )  # fmt: skip
            print()
            _row(f"(c) send -> recipient's IDLE EXISTS ({samples}+{samples})", ours, theirs)
            if misses:
                outbox = await _outbox_states(engine, m.account_id)
                print(f"  misses (nothing seen in {STEP_TIMEOUT:.0f} s): {misses}; outbox: {outbox}")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await direct.close()
        await api.http.aclose()
        common.stop_process(gateway)
        common.stop_process(follower)
        common.report_errors("inboxql sync", logs)
        logs.close()
        await engine.dispose()


def run(messages: int, samples: int, timeout: float, parts: str, rounds: int) -> None:
    with common.synced_mailbox(messages, "inboxql_writebench") as m:
        root = Path(tempfile.mkdtemp(prefix="inboxql-bench-postfix-"))
        with PostfixServer(root, m.server) as postfix:
            asyncio.run(asyncio.wait_for(run_async(m, samples, postfix, parts, rounds), timeout))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--messages", type=int, default=1500, help="size of the mailbox (INBOX needs 1,000 + 2x samples)"
    )
    parser.add_argument("--samples", type=int, default=50, help="samples per side for (a) and (c)")
    parser.add_argument("--timeout", type=float, default=1200, help="give up after this many seconds")
    parser.add_argument("--parts", default="abc", help="which of (a), (b), (c) to run, e.g. --parts bc")
    parser.add_argument("--rounds", type=int, default=1, help="how many times to run (b), with the ratios' spread")
    args = parser.parse_args(argv)
    try:
        run(args.messages, args.samples, args.timeout, args.parts, args.rounds)
    except (BenchError, TimeoutError) as exc:
        print(f"writeback_bench: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
