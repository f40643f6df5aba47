"""Webhooks: every change reaches a flaky receiver once, in order, signed; a dead one is disabled; no SSRF;
managing hooks takes a token with the admin scope, and an admin token reaches only its own accounts' hooks.

These tests run gateways of their own on a database of their own (their delivery settings are fast, and they
allow loopback receivers), with a real receiver: a small Starlette app on a loopback port.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, func, select, update
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import delivery
from gateway.config import GatewayConfig
from gateway.ids import to_global
from gateway.testing import Client, ServerThread, add_folder, start_gateway
from inboxql.devmail import free_port
from schema import accounts, actions, tokens, webhooks
from schema.crypto import CredentialBox
from schema.db import create_engine
from schema.models import Action, ChangeLog, WebhookDelivery
from schema.models import Webhook as WebhookRow
from schema.settings import Settings
from schema.unit import Store
from tests.conftest import REDIS_URL, throwaway_database

FAST = GatewayConfig(
    webhook_allow_loopback=True,
    webhook_poll_seconds=0.05,
    webhook_safety_seconds=0.05,
    webhook_backoff_base_seconds=0.05,
    webhook_backoff_cap_seconds=0.2,
    webhook_timeout_seconds=5,
)

CREATE = """mutation($a: ID!, $u: String!, $e: [String!]!) {
  createWebhook(accountId: $a, url: $u, events: $e) { secret webhook { id cursor state } } }"""
HOOKS = """query($a: ID!) { webhooks(accountId: $a) { edges { node {
  id url state disabledReason failingSince cursor
  deliveries(first: 100) { totalCount nodes { firstSeq lastSeq attempt statusCode error } } } } } }"""


@dataclass
class Receiver:
    """A webhook endpoint that verifies signatures as gateway/README.md tells receivers to, and dedups by id."""

    fail_first: int = 0
    always_fail: bool = False
    delay: float = 0.0
    secret: str = ""
    requests: int = 0
    accepted: list[str] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    duplicates: int = 0
    bad_signatures: int = 0
    hosts: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # the accepted events' bodies, in order

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        self.requests += 1
        self.hosts.append(request.headers["host"])
        if self.delay:
            await asyncio.sleep(self.delay)
        parts = dict(p.split("=", 1) for p in request.headers["inboxql-signature"].split(","))
        expected = hmac.new(self.secret.encode(), parts["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, parts["v1"]) or abs(time.time() - int(parts["t"])) > 300:
            self.bad_signatures += 1
            return Response(status_code=400)
        if self.always_fail or self.requests <= self.fail_first:
            return Response(status_code=500)
        event_id = request.headers["inboxql-event-id"]
        if event_id in self.accepted:
            self.duplicates += 1
        else:
            self.accepted.append(event_id)
            self.seqs.append(int(event_id.split(":")[1]))
            self.events.append(json.loads(body)["event"])
        return Response(status_code=204)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])


@pytest.fixture(scope="module")
def wh_settings() -> Iterator[Settings]:
    with throwaway_database("inboxql_webhooks_test") as url:
        yield Settings(database_url=url, redis_url=REDIS_URL, secret_key=secrets.token_urlsafe(32))


@pytest.fixture(scope="module")
async def wh_store(wh_settings: Settings) -> AsyncIterator[Store]:
    engine = create_engine(wh_settings.database_url)
    yield Store(engine, None)
    await engine.dispose()


@dataclass
class Tenant:
    account: int
    gid: str
    token: str  # with the admin scope: it manages the account's hooks
    reader: str  # the same account without the admin scope


async def new_tenant(store: Store, settings: Settings) -> Tenant:
    address = f"{secrets.token_hex(4)}@example.test"
    endpoint = accounts.ImapEndpoint("127.0.0.1", 143, "none", address)
    account = await accounts.create(store, CredentialBox(settings.secret_key), address, endpoint, "pw")
    async with store.sessions() as session, session.begin():
        token = await tokens.create_token(session, [account], admin=True)
        reader = await tokens.create_token(session, [account])
    return Tenant(account, to_global("Account", account), token, reader)


def serve(app: Starlette) -> ServerThread:
    server = ServerThread(app, free_port())
    server.start()
    return server


async def eventually(check: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def make_changes(store: Store, tenant: Tenant, n: int) -> None:
    for _ in range(n):
        await add_folder(store, tenant.account, f"F-{secrets.token_hex(4)}", None)


async def logged_after(store: Store, account: int, cursor: int) -> list[int]:
    async with store.sessions() as session:
        found = await session.scalars(
            select(ChangeLog.seq).where(ChangeLog.account_id == account, ChangeLog.seq > cursor).order_by(ChangeLog.seq)
        )
        return list(found)


async def hooks_of(client: Client, tenant: Tenant) -> list[dict[str, Any]]:
    data = await client.data(HOOKS, {"a": tenant.gid})
    return [edge["node"] for edge in data["webhooks"]["edges"]]


async def test_a_flaky_receiver_gets_every_event_once_in_order_signed_across_restarts(
    wh_settings: Settings, wh_store: Store
) -> None:
    tenant = await new_tenant(wh_store, wh_settings)
    receiver = Receiver(fail_first=3, delay=0.05)
    sink = serve(receiver.app())
    gateway = start_gateway(wh_settings, FAST)
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
            created = (
                await Client(http, tenant.token).data(CREATE, {"a": tenant.gid, "u": f"{sink.url}/hook", "e": ["*"]})
            )["createWebhook"]
        receiver.secret = created["secret"]
        start = created["webhook"]["cursor"]
        await make_changes(wh_store, tenant, 6)

        async def some() -> bool:
            return len(receiver.accepted) >= 2

        await eventually(some)
    finally:
        gateway.stop()
    delivered_before_restart = len(receiver.accepted)
    await make_changes(wh_store, tenant, 4)  # while no gateway runs
    expected = await logged_after(wh_store, tenant.account, start)
    assert delivered_before_restart < len(expected)

    gateway = start_gateway(wh_settings, FAST)
    try:

        async def done() -> bool:
            return len(receiver.accepted) >= len(expected)

        await eventually(done)
        await asyncio.sleep(0.3)  # anything extra would arrive now
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
            (hook,) = await hooks_of(Client(http, tenant.token), tenant)
    finally:
        gateway.stop()
        sink.stop()

    assert receiver.seqs == expected
    assert receiver.accepted == [f"{tenant.account}:{seq}" for seq in expected]
    assert receiver.duplicates == 0
    assert receiver.bad_signatures == 0
    assert receiver.requests == len(expected) + 3
    assert hook["state"] == "active"
    assert hook["cursor"] == expected[-1]
    log = hook["deliveries"]
    assert log["totalCount"] == len(expected) + 3
    attempts = list(reversed(log["nodes"]))  # newest first
    assert [a["statusCode"] for a in attempts[:3]] == [500, 500, 500]
    assert [a["attempt"] for a in attempts[:4]] == [1, 2, 3, 4]
    assert {a["statusCode"] for a in attempts[3:]} == {204}
    assert [a["firstSeq"] for a in attempts[3:]] == expected


async def test_a_receiver_that_always_fails_gets_its_hook_disabled_and_re_enabled(
    wh_settings: Settings, wh_store: Store
) -> None:
    tenant = await new_tenant(wh_store, wh_settings)
    receiver = Receiver(always_fail=True)
    sink = serve(receiver.app())
    gateway = start_gateway(wh_settings, replace(FAST, webhook_disable_after_seconds=1.0))
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
            client = Client(http, tenant.token)
            created = (await client.data(CREATE, {"a": tenant.gid, "u": f"{sink.url}/hook", "e": ["folder"]}))[
                "createWebhook"
            ]
            receiver.secret = created["secret"]
            await make_changes(wh_store, tenant, 1)

            async def disabled() -> bool:
                return bool((await hooks_of(client, tenant))[0]["state"] == "disabled")

            await eventually(disabled)
            (hook,) = await hooks_of(client, tenant)
            assert "failed for" in hook["disabledReason"]
            assert "HTTP 500" in hook["disabledReason"]
            log = hook["deliveries"]
            assert log["totalCount"] >= 2
            assert log["totalCount"] == receiver.requests
            assert {d["statusCode"] for d in log["nodes"]} == {500}
            assert [d["attempt"] for d in reversed(log["nodes"])] == list(range(1, log["totalCount"] + 1))
            assert hook["cursor"] == created["webhook"]["cursor"]

            await asyncio.sleep(0.5)
            assert receiver.requests == log["totalCount"]  # a disabled hook is left alone

            receiver.always_fail = False
            enabled = await client.data(
                "mutation($id: ID!) { enableWebhook(id: $id) { state disabledReason } }", {"id": hook["id"]}
            )
            assert enabled["enableWebhook"] == {"state": "active", "disabledReason": None}

            async def delivered() -> bool:
                return len(receiver.accepted) == 1

            await eventually(delivered)
    finally:
        gateway.stop()
        sink.stop()
    assert receiver.seqs == await logged_after(wh_store, tenant.account, created["webhook"]["cursor"])


async def test_a_hook_re_enabled_on_a_quiet_account_is_delivered_at_once_not_at_the_safety_poll(
    wh_settings: Settings, wh_store: Store
) -> None:
    """Events wait for a disabled hook on an account where nothing else happens (this store rings no doorbell):
    enableWebhook rings the account's doorbell, so delivery resumes within about `webhook_discover_seconds`,
    not at the 30 s safety poll."""
    tenant = await new_tenant(wh_store, wh_settings)
    receiver = Receiver()
    sink = serve(receiver.app())
    config = replace(FAST, webhook_poll_seconds=30, webhook_safety_seconds=30, webhook_discover_seconds=0.5)
    gateway = start_gateway(wh_settings, config)
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
            client = Client(http, tenant.token)
            created = (await client.data(CREATE, {"a": tenant.gid, "u": f"{sink.url}/hook", "e": ["folder"]}))[
                "createWebhook"
            ]
            receiver.secret = created["secret"]
            await disable_directly(wh_store, tenant.account)
            await make_changes(wh_store, tenant, 2)
            await asyncio.sleep(1.0)
            assert receiver.accepted == []
            started = time.monotonic()
            await client.data(
                "mutation($id: ID!) { enableWebhook(id: $id) { state } }", {"id": created["webhook"]["id"]}
            )

            async def delivered() -> bool:
                return len(receiver.accepted) == 2

            await eventually(delivered, timeout=10)
            assert time.monotonic() - started < 10  # the safety poll would take 30 s
    finally:
        gateway.stop()
        sink.stop()
    assert receiver.seqs == await logged_after(wh_store, tenant.account, created["webhook"]["cursor"])


@pytest.mark.parametrize(
    ("address", "private", "loopback", "refused"),
    [
        ("169.254.169.254", True, True, "a cloud metadata address"),
        ("fd00:ec2::254", True, True, "a cloud metadata address"),
        ("::ffff:169.254.169.254", True, True, "a cloud metadata address"),
        ("169.254.10.1", True, True, "a link-local address"),
        ("fe80::1", True, True, "a link-local address"),
        ("127.0.0.1", False, False, "a loopback address"),
        ("::1", False, False, "a loopback address"),
        ("127.0.0.1", False, True, None),
        ("10.1.2.3", False, True, "a private address"),
        ("192.168.1.1", False, True, "a private address"),
        ("10.1.2.3", True, False, None),
        ("0.0.0.0", True, True, "not a unicast address"),
        ("93.184.215.14", False, False, None),
    ],
)
def test_which_addresses_a_hook_may_call(address: str, private: bool, loopback: bool, refused: str | None) -> None:
    ip = ipaddress.ip_address(address)
    assert delivery.refusal(ip, allow_private=private, allow_loopback=loopback) == refused


def test_signatures_verify_and_expire() -> None:
    header = delivery.sign("whsec_x", 1_700_000_000, b'{"a":1}')
    assert delivery.verify("whsec_x", header, b'{"a":1}', now=1_700_000_100)
    assert not delivery.verify("whsec_y", header, b'{"a":1}', now=1_700_000_100)
    assert not delivery.verify("whsec_x", header, b'{"a":2}', now=1_700_000_100)
    assert not delivery.verify("whsec_x", header, b'{"a":1}', now=1_700_001_000)


def test_backoff_is_jittered_and_capped() -> None:
    waits = [delivery.backoff(n, 1.0, 60.0) for n in range(40)]
    assert all(0 <= w <= min(60.0, 2.0**n) for n, w in enumerate(waits))


async def test_link_local_and_metadata_urls_are_refused_also_by_name_and_after_dns_changes(
    wh_settings: Settings, wh_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    dns: dict[str, str] = {"metadata.test": "169.254.169.254", "rebind.test": "127.0.0.1"}
    resolved: list[str] = []

    async def fake_resolve(host: str, port: int) -> list[delivery.IPAddress]:
        resolved.append(host)
        if host not in dns:
            raise OSError("no such host")
        return [ipaddress.ip_address(dns[host])]

    monkeypatch.setattr(delivery, "resolve", fake_resolve)
    tenant = await new_tenant(wh_store, wh_settings)
    receiver = Receiver()
    sink = serve(receiver.app())
    gateway = start_gateway(wh_settings, FAST)
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
            client = Client(http, tenant.token)
            for url in (
                "http://169.254.169.254/latest/meta-data/",
                "http://[fd00:ec2::254]/",
                "http://[fe80::1]:8080/hook",
                "http://169.254.1.1/hook",
                "http://10.0.0.5/hook",
                "http://metadata.test/computeMetadata/v1/",
                "http://nowhere.test/hook",
                "file:///etc/passwd",
                "http://user:pw@rebind.test/hook",
            ):
                answer = await client.run(CREATE, {"a": tenant.gid, "u": url, "e": ["*"]})
                assert answer["data"] is None, url
                assert answer["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", url
            assert await hooks_of(client, tenant) == []

            port = int(sink.url.rsplit(":", 1)[1])
            created = await client.data(CREATE, {"a": tenant.gid, "u": f"http://rebind.test:{port}/hook", "e": ["*"]})
            receiver.secret = created["createWebhook"]["secret"]
            await make_changes(wh_store, tenant, 1)

            async def delivered() -> bool:
                return len(receiver.accepted) == 1

            # Only our fake DNS knows rebind.test: the POST went to the address that was checked.
            await eventually(delivered)
            assert receiver.hosts == [f"rebind.test:{port}"]

            dns["rebind.test"] = "169.254.169.254"  # the name now points at the metadata service
            await make_changes(wh_store, tenant, 1)

            async def refused() -> bool:
                hooks = await hooks_of(client, tenant)
                return bool(hooks[0]["deliveries"]["totalCount"] > 1)

            await eventually(refused)
            (hook,) = await hooks_of(client, tenant)
            latest = hook["deliveries"]["nodes"][0]
            assert latest["statusCode"] is None
            assert "refused" in latest["error"]
            assert "metadata" in latest["error"]
            assert "169.254.169.254" not in latest["error"]  # what the name resolved to is not shown
    finally:
        gateway.stop()
        sink.stop()
    assert receiver.requests == 1
    assert "metadata.test" in resolved


async def stored_hooks(store: Store, account: int) -> list[dict[str, Any]]:
    """Every column of the account's hooks as the database holds them, and the size of each delivery log."""
    async with store.sessions() as session:
        rows = await session.scalars(select(WebhookRow).where(WebhookRow.account_id == account).order_by(WebhookRow.id))
        found = []
        for row in rows.all():
            logged = await session.scalar(
                select(func.count()).select_from(WebhookDelivery).where(WebhookDelivery.webhook_id == row.id)
            )
            found.append({**{c.key: getattr(row, c.key) for c in WebhookRow.__table__.columns}, "deliveries": logged})
        return found


async def disable_directly(store: Store, account: int) -> None:
    """Disable the account's hooks in the database, so that re-enabling one is visible there."""
    async with store.sessions() as session, session.begin():
        await session.execute(
            update(WebhookRow)
            .where(WebhookRow.account_id == account)
            .values(state="disabled", disabled_reason="disabled by the test")
        )


MUTATIONS = {
    "deleteWebhook": "mutation($id: ID!) { deleteWebhook(id: $id) }",
    "enableWebhook": "mutation($id: ID!) { enableWebhook(id: $id) { id state } }",
}


async def test_a_token_without_the_admin_scope_is_forbidden_every_webhook_operation(
    wh_settings: Settings, wh_store: Store
) -> None:
    tenant = await new_tenant(wh_store, wh_settings)
    other = await new_tenant(wh_store, wh_settings)
    url = "http://127.0.0.1:9/hook"  # never called: the gateway delivers nothing here
    gateway = start_gateway(wh_settings, replace(FAST, webhooks=False))
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
            admin = Client(http, tenant.token)
            reader = Client(http, tenant.reader)
            hook = (await admin.data(CREATE, {"a": tenant.gid, "u": url, "e": ["*"]}))["createWebhook"]["webhook"]
            await disable_directly(wh_store, tenant.account)
            before = await stored_hooks(wh_store, tenant.account)
            assert [to_global("Webhook", row["id"]) for row in before] == [hook["id"]]
            assert before[0]["state"] == "disabled"

            # The reader reads the account's mail as before...
            assert (await reader.data("{ accounts { totalCount } }")) == {"accounts": {"totalCount": 1}}
            # ...but every webhook operation is refused, before its arguments are looked at: another account's
            # id and a malformed hook id are FORBIDDEN too, not NOT_FOUND or BAD_USER_INPUT (nothing to learn).
            attempts: list[tuple[str, dict[str, Any]]] = [
                (CREATE, {"a": tenant.gid, "u": url, "e": ["*"]}),
                (CREATE, {"a": other.gid, "u": url, "e": ["*"]}),
                (CREATE, {"a": tenant.gid, "u": "file:///etc/passwd", "e": ["nonsense"]}),
                (HOOKS, {"a": tenant.gid}),
                (HOOKS, {"a": other.gid}),
                (MUTATIONS["deleteWebhook"], {"id": hook["id"]}),
                (MUTATIONS["enableWebhook"], {"id": hook["id"]}),
                (MUTATIONS["deleteWebhook"], {"id": "not-a-hook"}),
            ]
            for query, variables in attempts:
                response = await reader.post(query, variables)
                assert response.status_code == 200, response.text
                answer = response.json()
                assert answer["data"] is None, (query, variables)
                (error,) = answer["errors"]
                assert error["extensions"]["code"] == "FORBIDDEN", (query, variables)
                assert "admin scope" in error["message"]

            assert await stored_hooks(wh_store, tenant.account) == before
            assert await stored_hooks(wh_store, other.account) == []

            # The same operations with the admin token of the same account do what they say.
            (listed,) = await hooks_of(admin, tenant)
            assert (listed["id"], listed["state"], listed["url"]) == (hook["id"], "disabled", url)
            enabled = await admin.data(MUTATIONS["enableWebhook"], {"id": hook["id"]})
            assert enabled == {"enableWebhook": {"id": hook["id"], "state": "active"}}
            assert [row["state"] for row in await stored_hooks(wh_store, tenant.account)] == ["active"]
            assert await admin.data(MUTATIONS["deleteWebhook"], {"id": hook["id"]}) == {"deleteWebhook": True}
            assert await stored_hooks(wh_store, tenant.account) == []
    finally:
        gateway.stop()


async def test_an_admin_token_cannot_see_or_touch_another_accounts_hooks(
    wh_settings: Settings, wh_store: Store
) -> None:
    mine = await new_tenant(wh_store, wh_settings)
    theirs = await new_tenant(wh_store, wh_settings)
    gateway = start_gateway(wh_settings, replace(FAST, webhooks=False))
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
            me = Client(http, mine.token)
            them = Client(http, theirs.token)
            url = "http://127.0.0.1:9/hook"  # never called: no change is made
            theirs_hook = (await them.data(CREATE, {"a": theirs.gid, "u": url, "e": ["message.create"]}))[
                "createWebhook"
            ]["webhook"]
            await disable_directly(wh_store, theirs.account)
            before = await stored_hooks(wh_store, theirs.account)

            answer = await me.run(CREATE, {"a": theirs.gid, "u": url, "e": ["*"]})
            assert answer["errors"][0]["extensions"]["code"] == "NOT_FOUND"
            answer = await me.run(HOOKS, {"a": theirs.gid})
            assert answer["errors"][0]["extensions"]["code"] == "NOT_FOUND"
            for name, mutation in MUTATIONS.items():
                answer = await me.run(mutation, {"id": theirs_hook["id"]})
                assert answer["errors"][0]["extensions"]["code"] == "NOT_FOUND", name
                assert answer["errors"][0]["message"] == "Webhook not found", name
            assert await hooks_of(me, mine) == []
            assert await stored_hooks(wh_store, theirs.account) == before
            assert await stored_hooks(wh_store, mine.account) == []

            answer = await Client(http, None).run(CREATE, {"a": mine.gid, "u": url, "e": ["*"]})
            assert answer["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
            answer = await them.run(CREATE, {"a": theirs.gid, "u": url, "e": ["mesage"]})
            assert answer["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"

            deleted = await them.data(MUTATIONS["deleteWebhook"], {"id": theirs_hook["id"]})
            assert deleted == {"deleteWebhook": True}
            assert await hooks_of(them, theirs) == []
    finally:
        gateway.stop()


async def test_a_hook_whose_events_expired_from_the_log_is_disabled_and_says_so(
    wh_settings: Settings, wh_store: Store
) -> None:
    tenant = await new_tenant(wh_store, wh_settings)
    receiver = Receiver()
    sink = serve(receiver.app())
    gateway = start_gateway(wh_settings, replace(FAST, webhooks=False))  # nothing delivers yet
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
            created = (
                await Client(http, tenant.token).data(CREATE, {"a": tenant.gid, "u": f"{sink.url}/hook", "e": ["*"]})
            )["createWebhook"]
    finally:
        gateway.stop()
    receiver.secret = created["secret"]
    start = created["webhook"]["cursor"]
    await make_changes(wh_store, tenant, 3)
    logged = await logged_after(wh_store, tenant.account, start)
    async with wh_store.sessions() as session, session.begin():
        await session.execute(
            delete(ChangeLog).where(ChangeLog.account_id == tenant.account, ChangeLog.seq <= logged[1])
        )

    gateway = start_gateway(wh_settings, FAST)
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
            client = Client(http, tenant.token)

            async def disabled() -> bool:
                return bool((await hooks_of(client, tenant))[0]["state"] == "disabled")

            await eventually(disabled)
            (hook,) = await hooks_of(client, tenant)
            assert (
                hook["disabledReason"]
                == f"change-log entries {start + 1}..{logged[1]} expired before they were delivered"
            )
            assert receiver.requests == 0

            await client.data("mutation($id: ID!) { enableWebhook(id: $id) { state } }", {"id": hook["id"]})

            async def caught_up() -> bool:
                return receiver.seqs == logged[2:]

            await eventually(caught_up)
    finally:
        gateway.stop()
        sink.stop()


def test_webhook_settings_come_from_the_environment() -> None:
    config = GatewayConfig.from_env(
        {
            "INBOXQL_WEBHOOK_ALLOW_LOOPBACK": "1",
            "INBOXQL_WEBHOOK_DISABLE_AFTER_SECONDS": "60",
            "INBOXQL_WEBHOOKS": "0",
            "INBOXQL_WEBHOOK_TIMEOUT_SECONDS": "4.5",
            "INBOXQL_WEBHOOK_CONCURRENCY": "6",
            "INBOXQL_WEBHOOK_SLOW_CONCURRENCY": "3",
            "INBOXQL_WEBHOOK_LOG_KEEP": "50",
            "INBOXQL_WEBHOOK_LOG_MAX_AGE_SECONDS": "86400",
        }
    )
    assert (config.webhook_timeout_seconds, config.webhook_concurrency, config.webhook_slow_concurrency) == (4.5, 6, 3)
    assert (config.webhook_log_keep, config.webhook_log_max_age_seconds) == (50, 86400)
    assert config.webhook_allow_loopback
    assert not config.webhook_allow_private
    assert config.webhook_disable_after_seconds == 60
    assert not config.webhooks
    assert GatewayConfig.from_env({}).webhook_disable_after_seconds == 3 * 24 * 3600


def test_events_name_actions_and_outbox_entries_too() -> None:
    assert webhooks.normalise_events(["action.update", "outbox", "outbox.create"]) == [
        "action.update",
        "outbox",
        "outbox.create",
    ]
    with pytest.raises(webhooks.BadEvents):
        webhooks.normalise_events(["actions.update"])


async def test_an_action_update_hook_gets_how_each_action_ended_and_nothing_else(
    wh_settings: Settings, wh_store: Store
) -> None:
    tenant = await new_tenant(wh_store, wh_settings)
    receiver = Receiver()
    sink = serve(receiver.app())
    gateway = start_gateway(wh_settings, FAST)

    async def queue_folder(name: str) -> Action:
        async with wh_store.unit(tenant.account) as uow:
            _, action_id = await actions.create_folder(uow, name, "/")
        async with wh_store.sessions() as s:
            [action] = await actions.get(s, [tenant.account], [action_id])
        return action

    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
            created = (
                await Client(http, tenant.token).data(
                    CREATE, {"a": tenant.gid, "u": f"{sink.url}/hook", "e": ["action.update"]}
                )
            )["createWebhook"]
        receiver.secret = created["secret"]
        refused, done = await queue_folder("Refused"), await queue_folder("Done")
        async with wh_store.unit(tenant.account) as uow:
            await actions.fail(uow, refused, "NO [ALREADYEXISTS] Mailbox already exists")
        async with wh_store.unit(tenant.account) as uow:
            await actions.complete(uow, done)
        await make_changes(wh_store, tenant, 2)  # folders: not asked for

        async def both() -> bool:
            return len(receiver.accepted) >= 2

        await eventually(both)
        expected = await logged_after(wh_store, tenant.account, created["webhook"]["cursor"])

        async def past_the_rest() -> bool:  # the hook's cursor moves over what it does not want
            async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
                (hook,) = await hooks_of(Client(http, tenant.token), tenant)
            return bool(hook["cursor"] == expected[-1])

        await eventually(past_the_rest)
    finally:
        gateway.stop()
        sink.stop()

    assert receiver.bad_signatures == 0
    assert [(e["type"], e["op"], e["objectId"]) for e in receiver.events] == [
        ("action", "update", refused.id),
        ("action", "update", done.id),
    ]
    failed, finished = (e["data"] for e in receiver.events)
    assert (failed["kind"], failed["state"], failed["error"]) == (
        "folder_create",
        "failed",
        "NO [ALREADYEXISTS] Mailbox already exists",
    )
    assert (finished["state"], finished["error"]) == ("done", None)
    assert len(expected) > 2  # the folders' and the actions' creations were logged, and left out
