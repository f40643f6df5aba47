"""Subscription latency: from APPEND's tagged OK to a bare IDLE client's EXISTS and to `messageAdded`'s `next`.

    .venv/bin/python -m bench.message_added_bench [--messages 500] [--appends 50] [--quiet-only]

A private Dovecot gets a small generated mailbox; a fresh database gets the account; `inboxql sync --once`
does the initial sync; then `inboxql sync --account ID` follows (IDLE on INBOX) and `inboxql gateway`
serves GraphQL. Alongside them: a bare IDLE client on INBOX (its own connection, raw asyncio socket) and a
graphql-transport-ws client subscribed to `messageAdded(accountId, role: "inbox")`. Then, `--appends`
times (1.0-1.5 s apart), another connection APPENDs a message to INBOX and we record, from the APPEND's
tagged OK:

    (a) the bare IDLE client's `* n EXISTS`;
    (b) the subscription's `next` message;

and (b) - (a) per append: what inboxql adds on top of Dovecot's own notification delay. Twice: on a quiet
mailbox, then busy (the push bench's load: flag changes in INBOX and appends to Archive, back to back).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from bench import common, push_bench
from bench.common import BenchError
from bench.push_bench import RawImap, _scalar, _wait_for, _wait_ready, idle_watcher
from gateway.ids import to_global
from inboxql.devmail import DovecotServer, free_port
from inboxql.mailgen import generate

STEP_TIMEOUT = 20.0  # seconds to wait for each of (a), (b) before counting a miss
SUBSCRIPTION = 'subscription($a: ID!) { messageAdded(accountId: $a, role: "inbox") { cursor } }'


@dataclass
class Observations(push_bench.Observations):
    """The push bench's observations (the bare IDLE client's EXISTS), plus the subscription's `next`s."""

    nexts: list[tuple[float, str]] = field(default_factory=list)  # (monotonic, cursor) of each `next`


async def _recv_json(ws: ClientConnection, timeout: float) -> dict[str, object]:
    raw = await asyncio.wait_for(ws.recv(), timeout)
    message = json.loads(raw)
    if not isinstance(message, dict):
        raise BenchError(f"the gateway sent a non-object websocket message: {raw!r:.200}")
    return message


async def subscription_watcher(
    port: int, token: str, account_gid: str, seen: Observations, subscribed: asyncio.Event
) -> None:
    async with connect(
        f"ws://127.0.0.1:{port}/graphql",
        subprotocols=[Subprotocol("graphql-transport-ws")],
        open_timeout=10,
        close_timeout=5,
    ) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}))
        ack = await _recv_json(ws, 10)
        if ack.get("type") != "connection_ack":
            raise BenchError(f"expected connection_ack, got {ack!r:.300}")
        await ws.send(
            json.dumps(
                {"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIPTION, "variables": {"a": account_gid}}}
            )
        )
        subscribed.set()
        while True:
            raw = await ws.recv()
            now = time.monotonic()
            message = json.loads(raw)
            if not isinstance(message, dict):
                raise BenchError(f"the gateway sent a non-object websocket message: {raw!r:.200}")
            kind = message.get("type")
            if kind == "ping":
                await ws.send(json.dumps({"type": "pong"}))
            elif kind == "next":
                payload = message.get("payload")
                if not isinstance(payload, dict) or payload.get("errors") or not payload.get("data"):
                    raise BenchError(f"the subscription answered with errors: {payload!r:.500}")
                data = payload["data"]
                cursor = data["messageAdded"]["cursor"] if isinstance(data, dict) else ""
                seen.nexts.append((now, str(cursor)))
                seen.note()
            elif kind in ("error", "complete"):
                raise BenchError(f"the subscription ended: {message!r:.500}")


@dataclass(frozen=True, slots=True)
class Sample:
    idle: float | None
    sub: float | None


async def measure(
    server: DovecotServer, user: str, password: str, seen: Observations, messages: Sequence[bytes], pause: float
) -> list[Sample]:
    appender = await RawImap.open(server, user, password)
    samples: list[Sample] = []
    try:
        for raw in messages:
            before_exists = max((n for _, n in seen.exists), default=0)
            before_nexts = len(seen.nexts)
            await appender.command(b"APPEND INBOX", raw)
            t0 = time.monotonic()
            deadline = t0 + STEP_TIMEOUT

            def idle_check(count: int = before_exists) -> float | None:
                return next((t for t, n in seen.exists if n > count), None)

            def sub_check(index: int = before_nexts) -> float | None:
                return seen.nexts[index][0] if len(seen.nexts) > index else None

            idle_at = await _wait_for(seen, idle_check, deadline)
            sub_at = await _wait_for(seen, sub_check, deadline)
            samples.append(Sample(None if idle_at is None else idle_at - t0, None if sub_at is None else sub_at - t0))
            if sub_at is None:
                # A missing `next` would shift every later one onto the wrong append: skip past stragglers.
                await asyncio.sleep(2.0)
            await asyncio.sleep(pause * random.uniform(1.0, 1.5))
    finally:
        await appender.close()
    return samples


# -- the gateway process -------------------------------------------------------------------------------------


def _healthz(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


async def _wait_healthy(port: int, gateway: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gateway.poll() is not None:
            raise BenchError(f"inboxql gateway exited {gateway.returncode} while starting")
        if await asyncio.to_thread(_healthz, port):
            return
        await asyncio.sleep(0.1)
    raise BenchError(f"the gateway did not answer /healthz in {timeout} s")


# -- the run -----------------------------------------------------------------------------------------------


def report(label: str, samples: Sequence[Sample], elapsed: float) -> None:
    idle = [s.idle for s in samples if s.idle is not None]
    sub = [s.sub for s in samples if s.sub is not None]
    diff = [s.sub - s.idle for s in samples if s.sub is not None and s.idle is not None]
    print()
    print(f"== {label}: {len(samples)} APPENDs to INBOX in {elapsed:.0f} s, ms from the tagged OK ==")
    print(f"{'':44} {'p50':>7} {'p99':>7} {'max':>7} {'seen':>5}")
    for name, values in (
        ("(a) bare IDLE client: * n EXISTS", idle),
        ("(b) messageAdded subscription: next", sub),
        ("(b) - (a), per append", diff),
    ):
        print(f"{name:44} {common.ms(values, 50)} {common.ms(values, 99)} {common.ms(values, 100)} {len(values):5d}")
    if idle and sub:
        p50 = 1000 * (common.percentile(sub, 50) - common.percentile(idle, 50))
        p99 = 1000 * (common.percentile(sub, 99) - common.percentile(idle, 99))
        print(f"{'p(b) - p(a)':44} {p50:7.0f} {p99:7.0f}")
    misses = len(samples) - min(len(idle), len(sub))
    if misses:
        print(f"   {misses} appends missed an event within {STEP_TIMEOUT:.0f} s")


async def run_async(
    server: DovecotServer,
    user: str,
    password: str,
    url: str,
    account_id: int,
    appends: int,
    pause: float,
    busy: bool,
) -> None:
    env = common.cli_env(url)
    engine: AsyncEngine = create_async_engine(url, pool_size=1)
    seen = Observations()
    subscribed = asyncio.Event()
    follower_log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    gateway_log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    follower = subprocess.Popen(
        [*common.inboxql_command(), "sync", "--account", str(account_id)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=follower_log,
        stderr=follower_log,
    )
    port = free_port()
    gateway = subprocess.Popen(
        [*common.inboxql_command(), "gateway", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=gateway_log,
        stderr=gateway_log,
    )
    tasks: list[asyncio.Task[None]] = []
    try:
        await _wait_ready(engine, account_id, follower, 120)
        found = await _scalar(
            engine, "SELECT id FROM folders WHERE account_id = :a AND role = 'inbox'", {"a": account_id}
        )
        if not isinstance(found, int):
            raise BenchError("the mirror has no inbox folder")
        await _wait_healthy(port, gateway, 60)
        token = await asyncio.to_thread(common.run_cli, ["token", "create", "--account", str(account_id)], env)
        token = token.strip().splitlines()[-1]
        tasks.append(asyncio.create_task(idle_watcher(server, user, password, seen)))
        sub_task = asyncio.create_task(
            subscription_watcher(port, token, to_global("Account", account_id), seen, subscribed)
        )
        tasks.append(sub_task)
        done, _ = await asyncio.wait({sub_task, asyncio.create_task(subscribed.wait())}, timeout=15)
        if sub_task in done:
            sub_task.result()  # raises what went wrong
        if not subscribed.is_set():
            raise BenchError("the websocket client did not subscribe in 15 s")
        pool = list(generate(2 * appends + 53, 99))
        # Warm-up: the follower IDLE on INBOX and the subscription live before the clock starts.
        warm = await measure(server, user, password, seen, pool[:3], 0.5)
        if any(s.sub is None for s in warm):
            raise BenchError("the subscription did not deliver the warm-up messages")
        start = time.monotonic()
        samples = await measure(server, user, password, seen, pool[3 : 3 + appends], pause)
        report("quiet", samples, time.monotonic() - start)
        if busy:
            # The push bench's load: flag changes in INBOX and appends to Archive, back to back, which the
            # follower mirrors (and the change log, the doorbell and the gateway carry) all along.
            ops = [0, 0]
            load = asyncio.create_task(push_bench.busy_load(server, user, password, pool[-50:], ops))
            start = time.monotonic()
            try:
                samples = await measure(server, user, password, seen, pool[3 + appends : 3 + 2 * appends], pause)
            finally:
                load.cancel()
                await asyncio.gather(load, return_exceptions=True)
            report("busy (flag changes in INBOX + appends to Archive)", samples, time.monotonic() - start)
            print(f"   (background: {ops[0]} flag changes in INBOX and {ops[1]} appends to Archive)")
        for task in tasks:
            if task.done():
                task.result()
        print()
        print("baseline (FIELD-NOTES): bare IDLE client p50 481 ms, p99 482 ms")
        if follower.poll() is not None:
            raise BenchError(f"inboxql sync exited {follower.returncode} during the benchmark")
        if gateway.poll() is not None:
            raise BenchError(f"inboxql gateway exited {gateway.returncode} during the benchmark")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(common.stop_process, gateway)
        await asyncio.to_thread(common.stop_process, follower)
        common.report_errors("the gateway", gateway_log)
        common.report_errors("the follower", follower_log)
        await engine.dispose()


def run(messages: int, appends: int, pause: float, timeout: float, busy: bool) -> None:
    with common.synced_mailbox(messages, "inboxql_subbench") as m:
        work = run_async(m.server, m.user, m.password, m.url, m.account_id, appends, pause, busy)
        asyncio.run(asyncio.wait_for(work, timeout))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=500, help="size of the mailbox synced first")
    parser.add_argument("--appends", type=int, default=50, help="APPENDs measured")
    parser.add_argument(
        "--pause", type=float, default=1.0, help="seconds (x1-1.5, random) from one append's last event to the next"
    )
    parser.add_argument("--timeout", type=float, default=600, help="give up after this many seconds")
    parser.add_argument("--quiet-only", action="store_true", help="skip the second round under load")
    args = parser.parse_args(argv)
    try:
        run(args.messages, args.appends, args.pause, args.timeout, not args.quiet_only)
    except (BenchError, TimeoutError) as exc:
        print(f"message_added_bench: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
