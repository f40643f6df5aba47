"""Both processes as an operator runs them, scraped by a real Prometheus (Debian's), asked through its HTTP API.

`inboxql sync --metrics-port` and `inboxql gateway` run as subprocesses against a database of their own, a Dovecot
user with N messages, and a private Prometheus scraping both every second. A stall is made the way a blocking call
makes one: on the loop's own thread. Both processes carry a sitecustomize (on PYTHONPATH) whose SIGUSR1 handler burns
the CPU for 300 ms; Python runs signal handlers on the main thread, which is the loop's thread in both.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import secrets
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from sqlalchemy import func, select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.testing import ServerThread
from inboxql.devmail import DovecotServer, free_port
from inboxql.mailgen import generate
from schema.db import create_engine
from schema.models import Message
from tests.conftest import REDIS_URL, new_user, throwaway_database
from tests.prometheus import PrometheusServer
from tests.test_cli import INBOXQL

ROOT = Path(__file__).resolve().parents[2]
N = 200
STALL_FUNCTION = "burn_cpu_for_the_stall_test"
BLOCKER = f'''
import signal
import time


def {STALL_FUNCTION}(seconds=0.3):
    """A CPU-heavy call on the event loop's thread, as a careless parse or hash would be."""
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        n += 1
    return n


def _on_usr1(signum, frame):
    {STALL_FUNCTION}()


signal.signal(signal.SIGUSR1, _on_usr1)
'''
# The start of a log record (cli.main's format): what follows until the next one is the record's.
RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ", re.MULTILINE)


@dataclass
class Running:
    """A subprocess whose stderr goes to a file, read as it grows."""

    proc: asyncio.subprocess.Process
    stderr: Path
    metrics_url: str

    def log(self, start: int = 0) -> str:
        return self.stderr.read_bytes()[start:].decode(errors="replace")

    def log_size(self) -> int:
        return self.stderr.stat().st_size

    async def stop(self, sig: int) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def _eventually(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        await asyncio.sleep(0.2)


async def _inboxql(env: dict[str, str], *args: str, stdin: str = "") -> str:
    proc = await asyncio.create_subprocess_exec(
        str(INBOXQL), *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 60)
    assert proc.returncode == 0, err.decode()
    return out.decode().strip()


async def _spawn(env: dict[str, str], stderr: Path, metrics_url: str, *args: str) -> Running:
    with stderr.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            str(INBOXQL), *args, stdin=asyncio.subprocess.DEVNULL, stdout=sink, stderr=sink, env=env
        )
    running = Running(proc, stderr, metrics_url)

    async def answers() -> bool:
        assert proc.returncode is None, running.log()
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                return (await client.get(metrics_url)).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        await _eventually(answers, 60, f"{args[0]} serving {metrics_url}")
    except BaseException:
        await running.stop(signal.SIGKILL)
        raise
    return running


def sample(text: str, name: str, labels: str = "") -> float:
    """One sample's value from Prometheus's text format (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(f"{name}{labels} ") or (not labels and line.startswith(f"{name}{{}} ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def scrape(url: str) -> str:
    async with httpx.AsyncClient(timeout=5) as client:
        answer = await client.get(url)
    assert answer.status_code == 200, answer.text
    return answer.text


@dataclass
class Deployment:
    database_url: str
    account_id: str
    token: str
    operator_token: str
    user: str
    password: str
    sync: Running
    gateway: Running
    gateway_url: str
    prometheus: PrometheusServer
    dovecot: DovecotServer


@pytest.fixture(scope="module")
def ops_database_url() -> Iterator[str]:
    with throwaway_database("inboxql_ops_test") as url:
        yield url


@pytest.fixture(scope="module")
async def deployment(
    ops_database_url: str, dovecot: DovecotServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Deployment]:
    root = tmp_path_factory.mktemp("ops")
    (root / "site").mkdir()
    (root / "site" / "sitecustomize.py").write_text(BLOCKER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("INBOXQL_")}
    env.update(
        INBOXQL_DATABASE_URL=ops_database_url,
        INBOXQL_REDIS_URL=REDIS_URL,
        INBOXQL_SECRET_KEY=secrets.token_urlsafe(32),
        INBOXQL_WEBHOOK_ALLOW_LOOPBACK="1",  # the receivers below
        # This checkout's code (ahead of the installed one), and the stall maker.
        PYTHONPATH=os.pathsep.join([str(ROOT), str(root / "site"), *filter(None, [env.get("PYTHONPATH")])]),
    )
    user, password = new_user(dovecot)
    dovecot.append(user, password, "INBOX", generate(N, seed=13))
    account_id = await _inboxql(
        env, "account", "add", "--imap-url", f"imap://{user}@127.0.0.1:{dovecot.port}", "--password-stdin",
        stdin=password + "\n",
    )  # fmt: skip
    token = await _inboxql(env, "token", "create", "--account", account_id, "--admin")  # webhooks too
    operator_token = await _inboxql(env, "token", "create", "--operator", "--name", "prometheus")
    sync_port, gateway_port = free_port(), free_port()
    sync = await _spawn(
        env, root / "sync.log", f"http://127.0.0.1:{sync_port}/metrics",
        "sync", "--account", account_id, "--metrics-port", str(sync_port),
    )  # fmt: skip
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    try:
        gateway = await _spawn(
            env, root / "gateway.log", f"{gateway_url}/metrics", "gateway", "--port", str(gateway_port)
        )
        try:
            targets = {"sync": f"127.0.0.1:{sync_port}", "gateway": f"127.0.0.1:{gateway_port}"}
            with PrometheusServer(root / "prometheus", targets) as prometheus:
                yield Deployment(
                    ops_database_url, account_id, token, operator_token, user, password,
                    sync, gateway, gateway_url, prometheus, dovecot,
                )  # fmt: skip
        finally:
            await gateway.stop(signal.SIGTERM)
    finally:
        await sync.stop(signal.SIGINT)


async def _mirrored(database_url: str) -> int:
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(Message)) or 0)
    finally:
        await engine.dispose()


async def _prometheus_says(prometheus: PrometheusServer, promql: str, expected: float, timeout: float = 30) -> None:
    async def check() -> bool:
        return await asyncio.to_thread(prometheus.value, promql) == expected

    try:
        await _eventually(check, timeout, f"{promql} == {expected}")
    except AssertionError:
        raise AssertionError(f"{promql}: {prometheus.query(promql)}, expected {expected}") from None


async def test_prometheus_counts_as_many_mirrored_messages_as_the_mirror_holds(deployment: Deployment) -> None:
    async def synced() -> bool:
        return await _mirrored(deployment.database_url) == N

    await _eventually(synced, 120, f"{N} messages mirrored")
    held = await _mirrored(deployment.database_url)
    prometheus = deployment.prometheus
    await _prometheus_says(prometheus, 'inboxql_messages_mirrored_total{job="sync"}', held)
    await _prometheus_says(prometheus, 'inboxql_accounts{job="sync",state="ready"}', 1)
    # One new account, one first message: measured once.
    await _prometheus_says(prometheus, 'inboxql_first_message_seconds_count{job="sync"}', 1)
    # Both targets scraped and up. Waited for: one scrape of a loaded machine can miss the 1 s scrape timeout.
    health: dict[str, str] = {}

    async def both_up() -> bool:
        health.update(await asyncio.to_thread(prometheus.health))
        return health == {"sync": "up", "gateway": "up"}

    try:
        await _eventually(both_up, 30, "both targets up")
    except AssertionError:
        raise AssertionError(f"targets: {health}") from None
    for job in ("sync", "gateway"):
        size = await asyncio.to_thread(prometheus.value, f'inboxql_db_pool_size{{job="{job}"}}')
        assert size is not None
        assert size > 0


async def test_new_mail_is_timed_from_the_push_to_its_commit(deployment: Deployment) -> None:
    await _eventually(lambda: _is(deployment.database_url, N), 120, f"{N} messages mirrored")
    prometheus = deployment.prometheus
    before = await asyncio.to_thread(prometheus.value, 'inboxql_change_to_commit_seconds_count{job="sync"}')
    # Into the user's INBOX over another connection: the sync's IDLE connection hears EXISTS.
    raw = next(generate(1, seed=99))
    await asyncio.to_thread(deployment.dovecot.append, deployment.user, deployment.password, "INBOX", [raw])
    await _eventually(lambda: _is(deployment.database_url, N + 1), 30, "the new message mirrored")
    await _prometheus_says(prometheus, 'inboxql_messages_mirrored_total{job="sync"}', N + 1)
    after = await asyncio.to_thread(prometheus.value, 'inboxql_change_to_commit_seconds_count{job="sync"}')
    assert after is not None
    assert after >= (before or 0) + 1
    seconds = await asyncio.to_thread(
        prometheus.value, 'inboxql_change_to_commit_seconds_sum{job="sync"} / inboxql_change_to_commit_seconds_count'
    )
    assert seconds is not None
    assert 0 < seconds < 5
    print(f"\nchange to commit: mean {seconds * 1000:.0f} ms over {after:.0f} commits")


async def _is(database_url: str, n: int) -> bool:
    return await _mirrored(database_url) == n


async def _at_least(database_url: str, n: int) -> bool:
    return await _mirrored(database_url) >= n


async def test_graphql_requests_are_counted_by_operation_type(deployment: Deployment) -> None:
    prometheus = deployment.prometheus
    ok_queries = 'inboxql_graphql_requests_total{job="gateway",operation="query",outcome="ok"}'
    timed = 'inboxql_graphql_request_seconds_count{job="gateway",operation="query"}'
    await _eventually(
        lambda: asyncio.to_thread(lambda: prometheus.value(ok_queries) is not None), 30, "the gateway scraped"
    )
    before = await asyncio.to_thread(prometheus.value, ok_queries) or 0
    timed_before = await asyncio.to_thread(prometheus.value, timed) or 0
    bad_before = await asyncio.to_thread(prometheus.value, ok_queries.replace('"query"', '"invalid"')) or 0
    async with httpx.AsyncClient(base_url=deployment.gateway_url, timeout=10) as client:
        headers = {"Authorization": f"Bearer {deployment.token}"}
        for _ in range(3):
            answer = await client.post("/graphql", json={"query": "{ accounts { nodes { id } } }"}, headers=headers)
            assert answer.status_code == 200, answer.text
            assert "errors" not in answer.json(), answer.text
        broken = await client.post("/graphql", json={"query": "{ accounts {"}, headers=headers)
        assert "errors" in broken.json()
    await _prometheus_says(prometheus, ok_queries, before + 3)
    await _prometheus_says(prometheus, timed, timed_before + 3)
    await _prometheus_says(
        prometheus, 'inboxql_graphql_requests_total{job="gateway",operation="invalid",outcome="error"}', bad_before + 1
    )


async def test_the_gateway_serves_metrics_to_loopback_and_operators_only(deployment: Deployment) -> None:
    """Behind a reverse proxy (X-Forwarded-For, which uvicorn trusts from loopback) the client is not local."""
    remote = {"X-Forwarded-For": "203.0.113.7"}
    async with httpx.AsyncClient(base_url=deployment.gateway_url, timeout=10) as client:
        local = await client.get("/metrics")
        anonymous = await client.get("/metrics", headers=remote)
        mail_token = await client.get("/metrics", headers={**remote, "Authorization": f"Bearer {deployment.token}"})
        operator = await client.get(
            "/metrics", headers={**remote, "Authorization": f"Bearer {deployment.operator_token}"}
        )
    assert local.status_code == 200
    assert "inboxql_graphql_requests_total" in local.text
    assert anonymous.status_code == 401
    assert anonymous.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert mail_token.status_code == 403
    assert mail_token.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert operator.status_code == 200
    assert "inboxql_loop_stalls_total" in operator.text
    assert deployment.token not in local.text + operator.text


def _stall_records(log: str) -> list[str]:
    starts = [m.start() for m in RECORD.finditer(log)] + [len(log)]
    records = [log[a:b] for a, b in itertools.pairwise(starts)]
    return [r for r in records if "event loop blocked for" in r]


@pytest.mark.parametrize("process", ["sync", "gateway"])
async def test_a_blocked_loop_is_logged_once_with_the_blocking_frame_and_counted(
    deployment: Deployment, process: str
) -> None:
    running: Running = getattr(deployment, process)
    await _eventually(lambda: _at_least(deployment.database_url, N), 120, f"{N} messages mirrored")
    await asyncio.sleep(0.5)
    stalls = "inboxql_loop_stalls_total"
    counted = sample(await scrape(running.metrics_url), stalls)
    start = running.log_size()
    running.proc.send_signal(signal.SIGUSR1)
    await asyncio.sleep(1.0)  # the stall ends, the watchdog logs it
    after = sample(await scrape(running.metrics_url), stalls)
    records = _stall_records(running.log(start))
    ours = [r for r in records if STALL_FUNCTION in r]
    assert len(ours) == 1, running.log(start)
    # Logged with its duration, about the 300 ms it blocked, and the frames down to the blocking call.
    duration = re.search(r"blocked for (\d+) ms", ours[0])
    assert duration is not None, ours[0]
    assert 200 <= int(duration.group(1)) < 2000, ours[0]  # 300 ms, less up to one heartbeat (50 ms)
    assert f"in {STALL_FUNCTION}" in ours[0]
    assert "in _on_usr1" in ours[0]
    # Counted once per stall: as many as were logged meanwhile (a loaded machine may add one of its own).
    assert after - counted == len(records) >= 1
    print(f"\n{process}: {ours[0].splitlines()[0]}")


def _receiver() -> ServerThread:
    """Webhook receivers on loopback: /ok answers 204, /fail 500."""

    async def ok(request: Request) -> Response:
        return Response(status_code=204)

    async def fail(request: Request) -> Response:
        return Response(status_code=500)

    app = Starlette(routes=[Route("/ok", ok, methods=["POST"]), Route("/fail", fail, methods=["POST"])])
    server = ServerThread(app, free_port())
    server.start()
    return server


async def test_subscribers_mutations_and_webhook_deliveries_are_counted(deployment: Deployment) -> None:
    await _eventually(lambda: _at_least(deployment.database_url, N), 120, f"{N} messages mirrored")
    prometheus = deployment.prometheus
    gateway = 'job="gateway"'
    started = f'inboxql_graphql_requests_total{{{gateway},operation="subscription",outcome="ok"}}'
    mutations = f'inboxql_graphql_requests_total{{{gateway},operation="mutation",outcome="ok"}}'
    delivered = f'inboxql_webhook_deliveries_total{{{gateway},outcome="ok"}}'
    failed = f'inboxql_webhook_deliveries_total{{{gateway},outcome="failed"}}'
    before: dict[str, float] = {}
    for q in (started, mutations, delivered, failed):
        found = await asyncio.to_thread(prometheus.value, q)
        before[q] = found or 0.0
    receiver = _receiver()
    headers = {"Authorization": f"Bearer {deployment.token}"}
    try:
        async with httpx.AsyncClient(base_url=deployment.gateway_url, timeout=10) as client:

            async def graphql(query: str, variables: dict[str, object] | None = None) -> dict[str, Any]:
                answer = await client.post("/graphql", json={"query": query, "variables": variables}, headers=headers)
                body: dict[str, Any] = answer.json()
                assert "errors" not in body, body
                data: dict[str, Any] = body["data"]
                return data

            account = (await graphql("{ accounts { nodes { id } } }"))["accounts"]["nodes"][0]["id"]
            for path in ("ok", "fail"):
                await graphql(
                    'mutation($a: ID!, $u: String!) { createWebhook(accountId: $a, url: $u, events: ["message"]) '
                    "{ webhook { id } } }",
                    {"a": account, "u": f"{receiver.url}/{path}"},
                )
            ws_url = deployment.gateway_url.replace("http://", "ws://") + "/graphql"
            async with websockets.connect(ws_url, subprotocols=[websockets.Subprotocol("graphql-transport-ws")]) as ws:
                await ws.send(json.dumps({"type": "connection_init", "payload": headers}))
                assert json.loads(await ws.recv())["type"] == "connection_ack"
                follow = "subscription($a: ID!) { changes(accountId: $a) { cursor } }"
                subscribe = {"query": follow, "variables": {"a": account}}
                await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": subscribe}))
                await _prometheus_says(prometheus, f"inboxql_graphql_subscribers{{{gateway}}}", 1)
                await _prometheus_says(prometheus, started, before[started] + 1)
                message = await graphql(
                    "query($a: ID!) { messages(accountId: $a, first: 1) { nodes { id } } }", {"a": account}
                )
                ids = [message["messages"]["nodes"][0]["id"]]
                await graphql(
                    "mutation($ids: [ID!]!) { updateMessages(input: {ids: $ids, starred: true}) { actions { id } } }",
                    {"ids": ids},
                )
                assert json.loads(await asyncio.wait_for(ws.recv(), 15))["type"] == "next"  # the change, live
            await _prometheus_says(prometheus, f"inboxql_graphql_subscribers{{{gateway}}}", 0)
            await _prometheus_says(prometheus, mutations, before[mutations] + 3)  # two hooks and the update
            await _prometheus_says(prometheus, delivered, before[delivered] + 1)

            async def failed_once() -> bool:
                return (await asyncio.to_thread(prometheus.value, failed) or 0) >= before[failed] + 1

            await _eventually(failed_once, 30, "the failing receiver's attempt counted")
    finally:
        receiver.stop()
