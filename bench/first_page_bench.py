"""How long a new account waits for its inbox: from `inboxql account add` to the first page of 50 INBOX threads
readable over GraphQL (subjects, participants, snippets), as a user would see it.

    .venv/bin/python -m bench.first_page_bench [--messages 10000 100000] [--seed 1] [--no-verify]

For each size: a private Dovecot is seeded with generated mail (`inboxql.mailgen`, ~85% INBOX), and each mailbox is
opened until Dovecot answers an open quickly (bench.common.settle_mailbox: right after the APPENDs, every session
replays Dovecot's transaction log, 0.2-0.45 s for the 100,000-message INBOX, which a mailbox in use never does;
the times are printed). Then three times,
each time into a fresh database with a gateway process (`inboxql gateway`, answering before the clock starts), timed
from the start of `inboxql account add`: the account is added (its login checked), a token is created for it,
`inboxql sync` starts (the long-running process, as a user runs it), and the gateway is polled over HTTP for the
account's folders and then the inbox's first 50 threads until the page is full. The first time with
INBOXQL_FIRST_BATCH=0 (each folder lists every UID before it downloads: the baseline, stopped at its first page),
the second with the default (the newest messages first); that one then runs to the end of the initial sync (every
folder followed) and `inboxql verify` must say identical. The third is the default again with `inboxql sync`
already running before the clock starts (as a deployment runs it, a service waiting for accounts): `account add`
rings the accounts bell and the running process starts the account at once. The fourth is the third with the
account added through the gateway's `addAccount` mutation (an operator token made before the clock; its IMAP login
checked as the CLI checks it), as a service adds accounts: no process starts at all.

Printed for each run: seconds from `account add` to the full first page, with where the time went (the `account
add` process, the token, the inbox listed in `folders`, a first thread, the full page), the whole initial sync,
and, measured in the same run, a bare `python -c pass` and the import of the CLI and sync modules (what each of
the two processes pays before it can do anything). Goal (issue 12): <= 1 s on 10,000 and on 100,000 messages.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import func, select

from bench import common
from bench.common import BenchError
from gateway.ids import from_global, to_global
from inboxql.devmail import DovecotServer, free_port
from schema import tokens
from schema.db import create_engine
from schema.models import SyncProcess
from schema.unit import Store

FOLDERS_QUERY = """query($a: ID!) { folders(accountId: $a, first: 100) { edges { node { id role } } } }"""
PAGE_QUERY = """query($a: ID!, $f: ID!) { threads(accountId: $a, filter: {folderId: $f}, first: 50) { edges { node {
    id subject snippet lastMessageAt participants { name address } } } } }"""
STATE_QUERY = """query { accounts(first: 10) { edges { node { syncState progress { folders foldersSynced messages } }
} } }"""
ADD_ACCOUNT = """mutation($i: AddAccountInput!) { addAccount(input: $i) { account { id } problem { message } } }"""
PAGE = 50
POLL_SECONDS = 0.02


@dataclass(frozen=True, slots=True)
class FirstPage:
    messages: int
    inbox: int  # messages seeded into INBOX
    order: str  # "list first" (INBOXQL_FIRST_BATCH=0) or "newest first" (the default)
    sync: str  # "after": `inboxql sync` started after `account add`; "running": started before the clock
    via: str  # "cli": the `inboxql account add` process; "api": the gateway's addAccount mutation
    add: float  # the `account add` process (or the mutation's answer), wall s
    token: float  # creating the token in this process
    listed: float  # from the clock's start to the inbox in `folders`
    first_thread: float  # ... to a first inbox thread
    page: float  # ... to 50 inbox threads with subjects
    complete: float | None  # ... to the account ready (every folder followed); None: not waited for
    verified: bool | None


def _gateway(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    gateway_env = {**env, "INBOXQL_GATEWAY_RATE_LIMIT_POINTS": str(10**12)}
    argv = [*common.inboxql_command(), "gateway", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(argv, env=gateway_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    common.stop_process(proc)
    raise BenchError("the gateway did not answer /healthz within 60 s")


def _token(url: str, account_id: int | None) -> str:
    """A token reading `account_id`; None: an operator token."""

    async def create() -> str:
        engine = create_engine(url)
        try:
            async with Store(engine).sessions() as session, session.begin():
                if account_id is None:
                    return await tokens.create_token(session, [], operator=True, name="first page bench")
                return await tokens.create_token(session, [account_id], name="first page bench")
        finally:
            await engine.dispose()

    return asyncio.run(create())


def _add_through_gateway(port: int, operator: str, server: DovecotServer, user: str, password: str) -> int:
    imap = {"host": server.host, "port": server.port, "security": "NONE", "username": user, "password": password}
    with httpx.Client(
        base_url=f"http://127.0.0.1:{port}", headers={"authorization": f"Bearer {operator}"}, timeout=60
    ) as client:
        added = _post(client, ADD_ACCOUNT, {"i": {"imap": imap}})["addAccount"]
    if added["account"] is None:
        raise BenchError(f"addAccount refused: {added['problem']}")
    kind, account_id = from_global(added["account"]["id"])
    if kind != "Account":
        raise BenchError(f"addAccount answered a {kind} id")
    return account_id


def _post(client: httpx.Client, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    r = client.post("/graphql", json={"query": query, "variables": variables})
    r.raise_for_status()
    body: dict[str, Any] = r.json()
    if body.get("errors"):
        raise BenchError(f"GraphQL errors: {body['errors']}")
    data: dict[str, Any] = body["data"]
    return data


def measure(messages: int, seed: int, verify: bool, timeout: float) -> list[FirstPage]:
    """Three runs on one seeded mailbox, each into a database of its own: listing every UID first
    (INBOXQL_FIRST_BATCH=0, the order before the first batch; stopped at its first page), then the default, both
    with `inboxql sync` started right after `account add`; then the default with `inboxql sync` already running
    (a deployment's service) when `account add` starts."""
    with common.private_dovecot() as server:
        user, password = common.new_user(server)
        start = time.perf_counter()
        seeded = common.seed_mailbox(server, user, password, messages, seed)
        print(f"seeded {messages} messages in {time.perf_counter() - start:.1f} s: {seeded.counts}", flush=True)
        opens = common.settle_mailbox(server, user, password, seeded.counts)
        print(
            "Dovecot settled (each open of a mailbox, ms, until one took under 50 ms): "
            + "; ".join(f"{name} {[round(1000 * t) for t in times]}" for name, times in opens.items()),
            flush=True,
        )
        inbox = seeded.counts["INBOX"]
        return [
            _one(server, user, password, messages, inbox, "0", False, timeout, running=False),
            _one(server, user, password, messages, inbox, None, verify, timeout, running=False),
            _one(server, user, password, messages, inbox, None, False, timeout, running=True),
            _one(server, user, password, messages, inbox, None, False, timeout, running=True, api=True),
        ]


def _sync_process_up(url: str, sync: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Wait until `inboxql sync` has beaten in `sync_processes` (its first round is done: it is waiting for
    accounts), then a little longer for its bells' subscription."""

    async def beaten() -> bool:
        engine = create_engine(url, pool_size=1)
        try:
            async with engine.connect() as conn:
                return bool(await conn.scalar(select(func.count()).select_from(SyncProcess)))
        finally:
            await engine.dispose()

    deadline = time.monotonic() + timeout
    while not asyncio.run(beaten()):
        if sync.poll() is not None:
            raise BenchError(f"inboxql sync exited {sync.returncode}")
        if time.monotonic() > deadline:
            raise BenchError(f"inboxql sync did not beat within {timeout:.0f} s")
        time.sleep(0.1)
    time.sleep(1.0)


def _one(
    server: DovecotServer,
    user: str,
    password: str,
    messages: int,
    inbox_count: int,
    first_batch: str | None,
    verify: bool,
    timeout: float,
    *,
    running: bool,
    api: bool = False,
) -> FirstPage:
    """One account added and synced into a fresh database; with `verify`, waits for the whole initial sync and
    runs `inboxql verify`, else stops the sync at the first page. `running`: `inboxql sync` is started (and up)
    before the clock starts, else right after `account add`."""
    with common.throwaway_database("inboxql_firstpage") as url:
        env = common.cli_env(url)
        if first_batch is not None:
            env["INBOXQL_FIRST_BATCH"] = first_batch
        port = free_port()
        gateway = _gateway(env, port)
        sync: subprocess.Popen[bytes] | None = None
        log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by report_errors
        complete: float | None = None
        try:
            if running:
                sync = subprocess.Popen(
                    [*common.inboxql_command(), "sync"], env=env, stdout=log, stderr=subprocess.STDOUT
                )
                _sync_process_up(url, sync)
            operator = _token(url, None) if api else ""
            print(f"load average before the timed run: {common.load_average()}", flush=True)
            t0 = time.perf_counter()
            if api:
                account_id = _add_through_gateway(port, operator, server, user, password)
            else:
                account_id = common.add_account(server, user, password, env)
            add = time.perf_counter() - t0
            token = _token(url, account_id)
            token_s = time.perf_counter() - t0 - add
            if sync is None:
                sync = subprocess.Popen(
                    [*common.inboxql_command(), "sync"], env=env, stdout=log, stderr=subprocess.STDOUT
                )
            account = to_global("Account", account_id)
            listed = first = page = 0.0
            inbox: str | None = None
            with httpx.Client(
                base_url=f"http://127.0.0.1:{port}", headers={"authorization": f"Bearer {token}"}, timeout=30
            ) as client:
                while True:
                    if time.perf_counter() - t0 > timeout:
                        raise BenchError(f"no full first page after {timeout} s")
                    if sync.poll() is not None:
                        raise BenchError(f"inboxql sync exited {sync.returncode}")
                    if inbox is None:
                        edges = _post(client, FOLDERS_QUERY, {"a": account})["folders"]["edges"]
                        inbox = next((e["node"]["id"] for e in edges if e["node"]["role"] == "inbox"), None)
                        if inbox is not None:
                            listed = time.perf_counter() - t0
                    if inbox is not None:
                        threads = _post(client, PAGE_QUERY, {"a": account, "f": inbox})["threads"]["edges"]
                        if threads and not first:
                            first = time.perf_counter() - t0
                        if len(threads) >= PAGE and all(t["node"]["subject"] is not None for t in threads):
                            page = time.perf_counter() - t0
                            break
                    time.sleep(POLL_SECONDS)
                print(
                    f"first page after {page:.2f} s (INBOXQL_FIRST_BATCH={first_batch or 'default'}, sync"
                    f" {'running' if running else 'started after'}, added through the {'gateway' if api else 'CLI'}):"
                    " account add"
                    f" {add:.2f} s, inbox listed at {listed:.2f} s, first thread at {first:.2f} s",
                    flush=True,
                )
                while verify:
                    node = _post(client, STATE_QUERY, {})["accounts"]["edges"][0]["node"]
                    progress = node["progress"]
                    if node["syncState"] == "ready" and progress["foldersSynced"] == progress["folders"]:
                        complete = time.perf_counter() - t0
                        break
                    if time.perf_counter() - t0 > timeout + 3600:
                        raise BenchError("the initial sync did not end within an hour of the first page")
                    if sync.poll() is not None:
                        raise BenchError(f"inboxql sync exited {sync.returncode}")
                    time.sleep(0.5)
        finally:
            if sync is not None:
                common.stop_process(sync)
                common.report_errors("inboxql sync", log)
            common.stop_process(gateway)
        verified: bool | None = None
        if verify:
            done = common.timed_run([*common.inboxql_command(), "verify", str(account_id)], env=env, timeout=1800)
            verified = done.returncode == 0
            if not verified:
                print(f"inboxql verify found differences:\n{done.stderr[-3000:]}", file=sys.stderr)
    order = "list first" if first_batch == "0" else "newest first"
    return FirstPage(
        messages, inbox_count, order, "running" if running else "after", "api" if api else "cli", add, token_s,
        listed, first, page, complete, verified,
    )  # fmt: skip


def report(results: list[FirstPage], python_start: common.Timed, imports: common.Timed) -> None:
    print()
    print("== from `inboxql account add` to the first page of 50 INBOX threads over GraphQL (s) ==")
    print(
        f"{'messages':>9} {'inbox':>7} {'order':>13} {'sync':>8} {'via':>4} {'add':>6} {'token':>6} {'listed':>7}"
        f" {'1st':>6} {'page':>6} {'all':>7} {'msg/s':>6}  verify"
    )
    for r in results:
        verdict = "-" if r.verified is None else "identical" if r.verified else "DIFFERENT"
        whole = f"{r.complete:7.1f} {r.messages / (r.complete - r.add):6.0f}" if r.complete else f"{'-':>7} {'-':>6}"
        print(
            f"{r.messages:9d} {r.inbox:7d} {r.order:>13} {r.sync:>8} {r.via:>4} {r.add:6.2f} {r.token:6.3f}"
            f" {r.listed:7.2f} {r.first_thread:6.2f} {r.page:6.2f} {whole}  {verdict}"
        )
    print(
        f"baseline, same run: `python -c pass` {python_start.wall:.3f} s; importing the sync process's modules"
        f" {imports.wall:.2f} s (paid by `account add` and by `inboxql sync` before any IMAP)"
    )
    print("sync: `inboxql sync` started right after `account add` (after), or already running before it (running)")
    print("via: `inboxql account add` (cli), or the gateway's addAccount mutation (api)")
    print("goal (issue 12): page <= 1 s on 10,000 and on 100,000 messages")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-verify", action="store_true", help="skip `inboxql verify` after the sync")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the first page")
    args = parser.parse_args(argv)
    common.check_services()
    print(f"machine: {common.machine()}")
    print(f"load average at start: {common.load_average()}", flush=True)
    env = {**os.environ}
    python_start = common.timed_run([sys.executable, "-c", "pass"], env=env, timeout=60)
    imports = common.timed_run([sys.executable, "-c", "import inboxql.commands, synccore.supervisor"], env=env)
    results = [r for n in args.messages for r in measure(n, args.seed, not args.no_verify, args.timeout)]
    report(results, python_start, imports)
    print(f"load average at the end: {common.load_average()}")
    return 0 if all(r.verified is not False for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
