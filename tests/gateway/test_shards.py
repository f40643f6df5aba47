"""The gateway over two shards, each a MariaDB server of its own, through real HTTP and a real websocket: one
token granted accounts on both walks them as one `accounts` list (another token sees neither), a global id of
shard 1 decodes to shard 1 and `node` finds it, the `changes` feed and a subscription deliver a change committed
on shard 1, and shard 1's server stopped fails only its accounts' fields, with SHARD_UNAVAILABLE."""

from __future__ import annotations

import asyncio
import json
import secrets
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from redis.asyncio import Redis
from sqlalchemy import func, select
from websockets.asyncio.client import ClientConnection

from gateway.config import GatewayConfig
from gateway.ids import from_global, to_global, upload_pk, webhook_pk
from gateway.testing import Client, ServerThread, add_folder, deliver, start_gateway
from inboxql import commands
from inboxql.devmail import DovecotServer
from schema import accounts, tokens
from schema.crypto import CredentialBox
from schema.db import session_factory
from schema.models import Action, ApiTokenAccount, Upload
from schema.settings import Settings
from schema.shards import Shards, shard_of
from tests.conftest import REDIS_URL, new_user
from tests.gateway.test_changes import mail
from tests.gateway.test_operator import ADD, LIST, REMOVE, imap_input
from tests.gateway.test_webhooks import CREATE, FAST, HOOKS, Receiver, eventually, serve
from tests.mariadb import PrivateMariaDB

ACCOUNTS = "query($first: Int, $after: String, $last: Int) { accounts(first: $first, after: $after, last: $last) {"
ACCOUNTS += " totalCount edges { cursor node { id address } } pageInfo { hasNextPage hasPreviousPage } } }"
SUBJECTS = """query($a: ID!) { messages(accountId: $a) { edges { node { id subject } } }
  threads(accountId: $a) { edges { node { id subject messages { edges { node { subject } } } } } } }"""
NODE = "query($id: ID!) { node(id: $id) { id ... on Message { subject account { address } } } }"
CHANGES = """query($a: ID!, $after: String) { changes(accountId: $a, after: $after) {
  cursor changes { operation objectType object { ... on Message { subject } } } } }"""
# Short, so that a test can outlast a cached grant.
TOKEN_CACHE = 2.0
FOLLOW = """subscription($a: ID!, $after: String) { changes(accountId: $a, after: $after) {
  operation objectType object { ... on Message { subject } } } }"""


@dataclass
class Deployment:
    settings: Settings
    shards: Shards
    gateway: ServerThread
    servers: tuple[PrivateMariaDB, PrivateMariaDB]
    ids: dict[str, int]  # zero (shard 0), one (shard 1), other (shard 1, another tenant)
    inboxes: dict[str, int]
    both: str  # a token granting zero and one
    other: str  # a token granting other alone
    zero_only: str  # a token granting zero alone


@pytest.fixture(scope="module")
def two_servers() -> Iterator[tuple[PrivateMariaDB, PrivateMariaDB]]:
    # Shard 1's server indexes words of two letters, shard 0's of three (InnoDB's default): each shard's search
    # must follow its own server's vocabulary.
    servers = tuple(
        PrivateMariaDB(Path(tempfile.mkdtemp(prefix="inboxql-gwshard-")), options=options)
        for options in ((), ("--innodb-ft-min-token-size=2",))
    )
    try:
        for server in servers:
            server.start()
        yield servers[0], servers[1]
    finally:
        for server in servers:
            server.remove()


@pytest.fixture(scope="module")
async def deployment(two_servers: tuple[PrivateMariaDB, PrivateMariaDB]) -> AsyncIterator[Deployment]:
    home, other = two_servers
    name = f"inboxql_gwshards_{secrets.token_hex(4)}"
    settings = Settings(
        database_url=home.url(name),
        redis_url=REDIS_URL,
        secret_key=secrets.token_urlsafe(32),
        shards=((1, other.url(name)),),
    )
    assert await commands.db_upgrade(settings) == 0
    box = CredentialBox(settings.secret_key)
    shards = Shards.of(settings, pool_size=2)
    redis = Redis.from_url(REDIS_URL)
    ids, inboxes = {}, {}
    for key, shard, subjects in (
        ("zero", 0, ["zero a", "zero b"]),
        ("one", 1, ["one a", "one b", "one c"]),
        ("other", 1, ["zanzibar secret"]),
    ):
        store = shards.store(shard, redis)
        endpoint = accounts.ImapEndpoint("127.0.0.1", 143, "none", key)
        ids[key] = await accounts.create(store, box, f"{key}@example.test", endpoint, "pw", shard=shard)
        inboxes[key] = await add_folder(store, ids[key], "INBOX", "inbox")
        await deliver(store, ids[key], inboxes[key], [(mail(s), []) for s in subjects])
    found = await accounts.existing(shards, ids.values())
    async with session_factory(shards.home)() as session, session.begin():
        both = await tokens.create_token(session, [ids["zero"], ids["one"]], found=found)
        lone = await tokens.create_token(session, [ids["other"]], found=found)
        zero_only = await tokens.create_token(session, [ids["zero"]], found=found)
    gateway = start_gateway(settings, GatewayConfig(token_cache_seconds=TOKEN_CACHE))
    try:
        yield Deployment(settings, shards, gateway, (home, other), ids, inboxes, both, lone, zero_only)
    finally:
        gateway.stop()
        await redis.aclose()
        await shards.dispose()


@pytest.fixture
async def http(deployment: Deployment) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=deployment.gateway.url, timeout=30) as client:
        yield client


@asynccontextmanager
async def socket(deployment: Deployment, token: str) -> AsyncIterator[ClientConnection]:
    """A graphql-transport-ws connection of the token, acknowledged."""
    url = deployment.gateway.url.replace("http://", "ws://") + "/graphql"
    async with websockets.connect(url, subprotocols=[websockets.Subprotocol("graphql-transport-ws")]) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        yield ws


async def next_message(ws: ClientConnection, op: str) -> dict[str, Any]:
    """The object of operation `op`'s next MESSAGE CREATE event."""
    async with asyncio.timeout(20):
        while True:
            message = json.loads(await ws.recv())
            if message.get("id") != op:
                continue
            assert message["type"] == "next", message
            event = message["payload"]["data"]["changes"]
            if (event["objectType"], event["operation"]) == ("MESSAGE", "CREATE"):
                found: dict[str, Any] = event["object"]
                return found


def gid(account_id: int) -> str:
    return to_global("Account", account_id)


async def test_one_token_walks_accounts_of_both_shards_and_another_sees_neither(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    ids = deployment.ids
    assert [shard_of(ids[k]) for k in ("zero", "one", "other")] == [0, 1, 1]
    both, other = Client(http, deployment.both), Client(http, deployment.other)

    listed = (await both.data(ACCOUNTS))["accounts"]
    assert [e["node"]["address"] for e in listed["edges"]] == ["zero@example.test", "one@example.test"]
    assert [e["node"]["id"] for e in listed["edges"]] == [gid(ids["zero"]), gid(ids["one"])]
    assert listed["totalCount"] == 2
    # Pages across the shards, by the same cursors one database gives.
    first = (await both.data(ACCOUNTS, {"first": 1}))["accounts"]
    assert [e["node"]["address"] for e in first["edges"]] == ["zero@example.test"]
    assert first["pageInfo"] == {"hasNextPage": True, "hasPreviousPage": False}
    rest = (await both.data(ACCOUNTS, {"first": 1, "after": first["edges"][0]["cursor"]}))["accounts"]
    assert [e["node"]["address"] for e in rest["edges"]] == ["one@example.test"]
    assert rest["pageInfo"] == {"hasNextPage": False, "hasPreviousPage": True}
    last = (await both.data(ACCOUNTS, {"last": 1}))["accounts"]
    assert [e["node"]["address"] for e in last["edges"]] == ["one@example.test"]
    assert last["pageInfo"] == {"hasNextPage": False, "hasPreviousPage": True}

    for key, subjects in (("zero", {"zero a", "zero b"}), ("one", {"one a", "one b", "one c"})):
        data = await both.data(SUBJECTS, {"a": gid(ids[key])})
        assert {e["node"]["subject"] for e in data["messages"]["edges"]} == subjects
        threads = data["threads"]["edges"]
        assert {t["node"]["subject"] for t in threads} == subjects
        assert {m["node"]["subject"] for t in threads for m in t["node"]["messages"]["edges"]} == subjects

    # Tenancy: the other token lists only its account, and reads nothing of the first token's two.
    alone = (await other.data(ACCOUNTS))["accounts"]
    assert [e["node"]["address"] for e in alone["edges"]] == ["other@example.test"]
    for key in ("zero", "one"):
        refused = await other.run(SUBJECTS, {"a": gid(ids[key])})
        assert {e["extensions"]["code"] for e in refused["errors"]} == {"NOT_FOUND"}
    refused = await both.run(SUBJECTS, {"a": gid(ids["other"])})
    assert {e["extensions"]["code"] for e in refused["errors"]} == {"NOT_FOUND"}
    # Without a token: UNAUTHENTICATED, on every shard's path.
    for query in (ACCOUNTS, NODE):
        anonymous = await Client(http, None).run(query, {"id": gid(ids["one"])} if query == NODE else None)
        assert [e["extensions"]["code"] for e in anonymous["errors"]] == ["UNAUTHENTICATED"]
    anonymous = await Client(http, None).run(
        "query($ids: [ID!]!) { nodes(ids: $ids) { id } }", {"ids": [gid(ids["one"])]}
    )
    assert [e["extensions"]["code"] for e in anonymous["errors"]] == ["UNAUTHENTICATED"]


async def test_a_global_id_of_shard_1_decodes_to_shard_1_and_node_finds_it(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    ids = deployment.ids
    both, other = Client(http, deployment.both), Client(http, deployment.other)
    found = {}
    for key in ("one", "other"):
        token = both if key == "one" else other
        edges = (await token.data(SUBJECTS, {"a": gid(ids[key])}))["messages"]["edges"]
        found[key] = edges[0]["node"]["id"]
    kind, pk = from_global(found["one"])
    assert (kind, shard_of(pk)) == ("Message", 1)
    node = (await both.data(NODE, {"id": found["one"]}))["node"]
    assert node["id"] == found["one"]
    assert node["account"]["address"] == "one@example.test"
    # Another tenant's message on the same shard reads as missing, like one that does not exist.
    assert (await both.data(NODE, {"id": found["other"]}))["node"] is None
    assert (await other.data(NODE, {"id": found["one"]}))["node"] is None
    missing = to_global("Message", 1 << 48 | 10**9)
    assert (await both.data(NODE, {"id": missing}))["node"] is None
    unconfigured = to_global("Message", 7 << 48 | 1)  # a shard this deployment does not list
    assert (await both.data(NODE, {"id": unconfigured}))["node"] is None
    # Both shards in one batch: one node from each.
    zero = (await both.data(SUBJECTS, {"a": gid(ids["zero"])}))["messages"]["edges"][0]["node"]["id"]
    pair = await both.data(
        "query($ids: [ID!]!) { nodes(ids: $ids) { id } }", {"ids": [zero, found["one"], found["other"]]}
    )
    assert pair["nodes"] == [{"id": zero}, {"id": found["one"]}, None]


async def test_the_feed_and_a_subscription_deliver_a_change_committed_on_shard_1(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    ids, both = deployment.ids, Client(http, deployment.both)
    account = gid(ids["one"])
    cursor = (await both.data(CHANGES, {"a": account}))["changes"]["cursor"]
    async with socket(deployment, deployment.both) as ws:
        payload = {"query": FOLLOW, "variables": {"a": account, "after": cursor}}
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))

        redis = Redis.from_url(REDIS_URL)
        try:
            store = deployment.shards.store(1, redis)  # rings shard 0's doorbell channel, as the sync process does
            await deliver(store, ids["one"], deployment.inboxes["one"], [(mail("fresh on one"), [])], first_uid=10)
        finally:
            await redis.aclose()
        assert await next_message(ws, "1") == {"subject": "fresh on one"}

    page = (await both.data(CHANGES, {"a": account, "after": cursor}))["changes"]
    created = [c for c in page["changes"] if (c["operation"], c["objectType"]) == ("CREATE", "MESSAGE")]
    assert [c["object"] for c in created] == [{"subject": "fresh on one"}]


UPDATE = """mutation($input: UpdateMessagesInput!) { updateMessages(input: $input) {
  actions { id kind } messages { id starred } } }"""


async def test_mutations_write_through_the_accounts_shard(deployment: Deployment, http: httpx.AsyncClient) -> None:
    ids, both = deployment.ids, Client(http, deployment.both)
    edges = (await both.data(SUBJECTS, {"a": gid(ids["one"])}))["messages"]["edges"]
    message = next(e["node"]["id"] for e in edges if e["node"]["subject"] == "one b")
    variables = {"input": {"ids": [message], "starred": True, "idempotencyKey": "star-on-one"}}
    once = (await both.data(UPDATE, variables))["updateMessages"]
    assert once["messages"] == [{"id": message, "starred": True}]
    [action] = once["actions"]
    assert shard_of(from_global(action["id"])[1]) == 1  # queued on the account's shard
    # The key was kept with the write, on shard 1: a retry reads the same reply and queues nothing more.
    again = (await both.data(UPDATE, variables))["updateMessages"]
    assert again["actions"] == once["actions"]
    async with deployment.shards.engine(1).connect() as conn:
        starred = await conn.scalar(select(func.count()).select_from(Action).where(Action.account_id == ids["one"]))
    assert starred == 1
    # A message of another tenant on the same shard is NOT_FOUND, as on one server.
    others = (await Client(http, deployment.other).data(SUBJECTS, {"a": gid(ids["other"])}))["messages"]["edges"]
    refused = await both.run(UPDATE, {"input": {"ids": [others[0]["node"]["id"]], "starred": True}})
    assert [e["extensions"]["code"] for e in refused["errors"]] == ["NOT_FOUND"]
    # Ids of accounts on two shards are of two accounts: refused as one mutation must be of one account.
    zero = (await both.data(SUBJECTS, {"a": gid(ids["zero"])}))["messages"]["edges"][0]["node"]["id"]
    mixed = await both.run(UPDATE, {"input": {"ids": [zero, message], "starred": False}})
    assert [e["extensions"]["code"] for e in mixed["errors"]] == ["BAD_USER_INPUT"]


SEARCH = """query($a: ID!, $q: String!) { search(accountId: $a, query: $q, first: 10) { nodes { subject } } }"""


async def test_search_follows_the_vocabulary_of_the_accounts_shard(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    ids, redis = deployment.ids, Redis.from_url(REDIS_URL)
    try:
        for key in ("zero", "other"):
            store = deployment.shards.store(shard_of(ids[key]), redis)
            await deliver(store, ids[key], deployment.inboxes[key], [(mail(f"ox cart of {key}"), [])], first_uid=50)
    finally:
        await redis.aclose()
    zero, other = Client(http, deployment.zero_only), Client(http, deployment.other)
    # Shard 0 read first: its vocabulary must not stand for shard 1's.
    refused = await zero.run(SEARCH, {"a": gid(ids["zero"]), "q": "ox"})
    assert [e["extensions"]["code"] for e in refused["errors"]] == ["BAD_USER_INPUT"]
    assert "too short to be indexed (ox)" in refused["errors"][0]["message"]
    found = await other.data(SEARCH, {"a": gid(ids["other"]), "q": "ox"})
    assert found["search"]["nodes"] == [{"subject": "ox cart of other"}]
    # Three letters are indexed on both.
    found = await zero.data(SEARCH, {"a": gid(ids["zero"]), "q": "cart"})
    assert found["search"]["nodes"] == [{"subject": "ox cart of zero"}]


async def test_downloads_and_uploads_of_an_account_of_shard_1(deployment: Deployment, http: httpx.AsyncClient) -> None:
    ids, both = deployment.ids, Client(http, deployment.both)
    edges = (await both.data(SUBJECTS, {"a": gid(ids["one"])}))["messages"]["edges"]
    message = next(e["node"]["id"] for e in edges if e["node"]["subject"] == "one c")
    raw = await http.get(f"/messages/{message}/raw", headers=both.headers())
    assert raw.status_code == 200, raw.text
    assert b"Subject: one c" in raw.content
    foreign = await http.get(f"/messages/{message}/raw", headers=Client(http, deployment.other).headers())
    assert foreign.status_code == 404

    done = await http.post(
        "/uploads",
        params={"accountId": gid(ids["one"]), "filename": "notes.txt"},
        content=b"notes for shard one\n",
        headers={**both.headers(), "content-type": "text/plain"},
    )
    assert done.status_code == 201, done.text
    upload = upload_pk(done.json()["id"])
    assert shard_of(upload) == 1
    async with deployment.shards.engine(1).connect() as conn:
        owner = await conn.scalar(select(Upload.account_id).where(Upload.id == upload))
    assert owner == ids["one"]


async def test_a_webhook_of_an_account_of_shard_1_lives_there_and_is_delivered(deployment: Deployment) -> None:
    one = deployment.ids["one"]
    async with session_factory(deployment.shards.home)() as session, session.begin():
        admin = await tokens.create_token(session, [one], admin=True, found={one})
    receiver = Receiver()
    sink = serve(receiver.app())
    gateway = start_gateway(deployment.settings, FAST)  # its deliverers: one per shard
    redis = Redis.from_url(REDIS_URL)
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
            created = (
                await Client(http, admin).data(CREATE, {"a": gid(one), "u": f"{sink.url}/hook", "e": ["message"]})
            )["createWebhook"]
            receiver.secret = created["secret"]
            assert shard_of(webhook_pk(created["webhook"]["id"])) == 1
            store = deployment.shards.store(1, redis)
            await deliver(store, one, deployment.inboxes["one"], [(mail("hooked on one"), [])], first_uid=20)

            async def delivered() -> bool:
                return any(e["type"] == "message" and e["op"] == "create" for e in receiver.events)

            await eventually(delivered)
            assert {e["accountId"] for e in receiver.events} == {one}
            assert receiver.bad_signatures == 0
            hooks = (await Client(http, admin).data(HOOKS, {"a": gid(one)}))["webhooks"]["edges"]
            assert [h["node"]["deliveries"]["totalCount"] > 0 for h in hooks] == [True]
    finally:
        gateway.stop()
        sink.stop()
        await redis.aclose()


@pytest.mark.hang_seconds(300)
async def test_shard_1_down_fails_only_its_accounts_with_shard_unavailable(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    ids, both = deployment.ids, Client(http, deployment.both)
    zero, one = gid(ids["zero"]), gid(ids["one"])
    query = "query($a: ID!) { messages(accountId: $a) { edges { node { subject } } } changesCursor(accountId: $a) }"
    nodes = "query($zero: ID!, $one: ID!) { zero: node(id: $zero) { id } one: node(id: $one) { id } }"
    async with session_factory(deployment.shards.home)() as session, session.begin():
        operator = await tokens.create_token(session, [], operator=True)
    status = await http.get("/status.json", headers=Client(http, operator).headers())
    assert [a["accountId"] for a in status.json()["accounts"]] == sorted(ids.values())
    assert "unavailableShards" not in status.json()
    ready = await http.get("/readyz")
    assert (ready.status_code, ready.json()) == (
        200,
        {"status": "ready", "database": "ok", "redis": "ok", "shards": {"1": "ok"}},
    )
    deployment.servers[1].stop()
    try:
        # Still in the balancer (every gateway sees the same shard down), and says which shard is not answering.
        ready = await http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["status"] == "degraded"
        assert ready.json()["database"] == "ok"
        assert ready.json()["shards"]["1"] != "ok"
        # The status page shows shard 0's accounts and names the shard it could not read.
        status = await http.get("/status.json", headers=Client(http, operator).headers())
        assert [a["accountId"] for a in status.json()["accounts"]] == [ids["zero"]]
        assert status.json()["unavailableShards"] == [1]
        # Shard 0's account answers; shard 1's fails, typed (a non-null root field: its request has no data).
        data = await both.data(query, {"a": zero})
        assert {e["node"]["subject"] for e in data["messages"]["edges"]} >= {"zero a", "zero b"}
        down = {"code": "SHARD_UNAVAILABLE", "shard": 1}
        answer = await both.run(query, {"a": one})
        assert answer["data"] is None
        assert [e["extensions"] for e in answer["errors"]] == [down]
        # Nullable fields fail alone: of two nodes, shard 1's is null with the error, shard 0's answers.
        answer = await both.run(nodes, {"zero": zero, "one": one})
        assert answer["data"] == {"zero": {"id": zero}, "one": None}
        assert [(e["path"], e["extensions"]) for e in answer["errors"]] == [(["one"], down)]
        listed_nodes = await both.run("query($ids: [ID!]!) { nodes(ids: $ids) { id } }", {"ids": [zero, one, zero]})
        assert listed_nodes["data"] == {"nodes": [{"id": zero}, None, {"id": zero}]}
        assert [(e["path"], e["extensions"]) for e in listed_nodes["errors"]] == [(["nodes", 1], down)]
        # The list of the token's accounts needs every shard that holds one.
        listed = await both.run(ACCOUNTS)
        assert [e["extensions"] for e in listed["errors"]] == [down]
        # Subscriptions: shard 1's account fails typed; shard 0's goes on and hears a new change.
        async with socket(deployment, deployment.both) as ws:
            await ws.send(
                json.dumps({"id": "1", "type": "subscribe", "payload": {"query": FOLLOW, "variables": {"a": one}}})
            )
            failed = json.loads(await asyncio.wait_for(ws.recv(), 20))
            errors = failed["payload"] if failed["type"] == "error" else failed["payload"]["errors"]
            assert [e["extensions"] for e in errors] == [down], failed
            payload = {"query": FOLLOW, "variables": {"a": zero}}
            await ws.send(json.dumps({"id": "2", "type": "subscribe", "payload": payload}))
            await asyncio.sleep(0.5)  # subscribed from now on
            redis = Redis.from_url(REDIS_URL)
            try:
                store = deployment.shards.store(0, redis)
                await deliver(
                    store, ids["zero"], deployment.inboxes["zero"], [(mail("zero while one is down"), [])], first_uid=30
                )
            finally:
                await redis.aclose()
            assert await next_message(ws, "2") == {"subject": "zero while one is down"}
        # A token whose accounts are all on shard 0 lists them as ever.
        assert (await Client(http, deployment.zero_only).data(ACCOUNTS))["accounts"]["totalCount"] == 1
    finally:
        deployment.servers[1].start()
    # Back: shard 1's accounts answer again.
    data = await both.data(query, {"a": one})
    assert {e["node"]["subject"] for e in data["messages"]["edges"]} >= {"one a", "one b", "one c"}


async def test_shard_0_down_keeps_known_tokens_reading_shard_1_and_answers_new_ones_503(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    ids, both = deployment.ids, Client(http, deployment.both)
    zero, one = gid(ids["zero"]), gid(ids["one"])
    query = "query($a: ID!) { messages(accountId: $a) { edges { node { subject } } } changesCursor(accountId: $a) }"
    async with session_factory(deployment.shards.home)() as session, session.begin():
        unseen = await tokens.create_token(session, [ids["one"]], found={ids["one"]})  # never used before the stop
    await both.data(query, {"a": one})  # the gateway holds this token's grant
    url = deployment.gateway.url.replace("http://", "ws://") + "/graphql"
    async with socket(deployment, deployment.both) as ws:
        await ws.send(
            json.dumps({"id": "1", "type": "subscribe", "payload": {"query": FOLLOW, "variables": {"a": one}}})
        )
        await asyncio.sleep(0.5)  # subscribed from now on
        deployment.servers[0].stop()
        try:
            # Out of the balancer: shard 0 holds the tokens and the global tables.
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["database"] != "ok"
            assert ready.json()["shards"] == {"1": "ok"}
            # A token never seen cannot be checked: 503, typed, with Retry-After; never a 500.
            for headers in ({"authorization": f"Bearer {unseen}"}, {"authorization": "Bearer iqt_unknown"}):
                answer = await http.post("/graphql", json={"query": query, "variables": {"a": one}}, headers=headers)
                assert answer.status_code == 503, answer.text
                assert int(answer.headers["retry-after"]) > 0
                [error] = answer.json()["errors"]
                assert error["extensions"]["code"] == "SHARD_UNAVAILABLE"
                assert error["extensions"]["shard"] == 0
            async with websockets.connect(url, subprotocols=[websockets.Subprotocol("graphql-transport-ws")]) as late:
                await late.send(
                    json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {unseen}"}})
                )
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await asyncio.wait_for(late.recv(), 20)
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == 1013
            # A token seen before keeps its grant past the cache period (nothing can be revoked meanwhile):
            # shard 1's account answers, shard 0's fails typed.
            await asyncio.sleep(TOKEN_CACHE + 0.5)
            data = await both.data(
                "query($a: ID!) { messages(accountId: $a) { edges { node { subject } } } }", {"a": one}
            )
            assert {e["node"]["subject"] for e in data["messages"]["edges"]} >= {"one a", "one b", "one c"}
            refused = await both.run(query, {"a": zero})
            assert [e["extensions"] for e in refused["errors"]] == [{"code": "SHARD_UNAVAILABLE", "shard": 0}]
            # The subscription of shard 1's account hears a change committed there.
            redis = Redis.from_url(REDIS_URL)
            try:
                store = deployment.shards.store(1, redis)
                await deliver(
                    store, ids["one"], deployment.inboxes["one"], [(mail("one while zero is down"), [])], first_uid=60
                )
            finally:
                await redis.aclose()
            assert await next_message(ws, "1") == {"subject": "one while zero is down"}
        finally:
            deployment.servers[0].start()
    # Back: the unseen token is looked up (no refusal was cached while it could not be checked).
    data = await Client(http, unseen).data(query, {"a": one})
    assert "one while zero is down" in {e["node"]["subject"] for e in data["messages"]["edges"]}


async def test_the_operator_api_manages_accounts_of_every_shard(
    deployment: Deployment, http: httpx.AsyncClient, dovecot: DovecotServer
) -> None:
    """Last in the module: it removes shard 1's second account."""
    ids = deployment.ids
    async with session_factory(deployment.shards.home)() as session, session.begin():
        operator = Client(http, await tokens.create_token(session, [], operator=True))
    listed = (await operator.data(LIST))["managedAccounts"]
    assert [n["id"] for n in listed["nodes"]] == [gid(i) for i in sorted(ids.values())]

    # Removal of shard 1's account revokes its token on shard 0 and deletes its grants there.
    removed = (await operator.data(REMOVE, {"a": gid(ids["other"])}))["removeAccount"]
    assert removed == {"accountId": gid(ids["other"]), "revokedTokens": 1, "released": True}
    async with session_factory(deployment.shards.home)() as session:
        assert await tokens.lookup(session, deployment.other) is None  # revoked
        grants = await session.scalar(
            select(func.count()).select_from(ApiTokenAccount).where(ApiTokenAccount.account_id == ids["other"])
        )
    assert grants == 0

    # New accounts go to the least loaded shard: a tie (one account each) to shard 0, then shard 1.
    placed = []
    for _ in range(2):
        user, password = new_user(dovecot)
        added = (await operator.data(ADD, {"i": {"imap": imap_input(dovecot, user, password)}}))["addAccount"]
        assert added["problem"] is None
        placed.append(shard_of(from_global(added["account"]["id"])[1]))
    assert placed == [0, 1]
