"""Fuzzing by schema (hypothesis-graphql) against the running gateway: no 5xx, no traceback, and every error
carries one of our codes, never INTERNAL (an INTERNAL here is a bug the fuzzer found)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import Mode, from_schema, nodes
from sqlalchemy import select

from gateway.config import GatewayConfig
from gateway.errors import CODES
from gateway.ids import NODE_TYPES, to_global
from gateway.sdl import current_sdl
from gateway.testing import Mail, ServerThread, World, add_folder, deliver, start_gateway
from mime.compose import Draft, Mailbox
from schema import accounts, outbox, tokens, uploads
from schema.crypto import CredentialBox
from schema.models import Folder, Message, Outbox, Thread, Upload
from schema.settings import Settings
from schema.unit import Store

SDL = current_sdl()
# Fixed examples by default, so CI is repeatable; INBOXQL_FUZZ_RANDOM=1 (and more examples) to hunt.
RANDOM = os.environ.get("INBOXQL_FUZZ_RANDOM") == "1"
EXAMPLES = int(os.environ.get("INBOXQL_FUZZ_EXAMPLES", "150"))


@pytest.fixture(scope="module")
def fuzz_server(gw_settings: Settings, world: World) -> Iterator[ServerThread]:
    server = start_gateway(gw_settings, GatewayConfig(rate_limit_points=10**12))
    yield server
    server.stop()


@pytest.fixture(scope="module")
async def fuzz_account(world: World, gw_store: Store, credential_box: CredentialBox) -> int:
    """An account of the fuzzer's own: fuzzed mutations change (optimistically) what they are given, and the
    seeded world must stay as the other tests expect it."""
    endpoint = accounts.ImapEndpoint("127.0.0.1", 143, "none", "fuzz")
    # SMTP settings (no server answers there, and no sync process runs): fuzzed sends get as far as the outbox.
    smtp = accounts.SmtpSettings("127.0.0.1", 9, "starttls")
    account = await accounts.create(gw_store, credential_box, "fuzz@example.test", endpoint, "pw", smtp)
    folder_ids = [
        await add_folder(gw_store, account, name, role)
        for name, role in (("INBOX", "inbox"), ("Trash", "trash"), ("Archive", "archive"), ("Notes", None))
    ]
    mails = [Mail(f"fuzz {i}", "F <f@example.test>", ["fuzz@example.test"], f"body {i}").raw() for i in range(4)]
    await deliver(gw_store, account, folder_ids[0], [(raw, ["\\Seen"] if i % 2 else []) for i, raw in enumerate(mails)])
    async with gw_store.sessions() as session, session.begin():
        await uploads.put(session, account, None, "fuzz.txt", "text/plain", b"fuzz")
    async with gw_store.unit(account) as uow:  # something for cancelSend to take back
        draft = Draft(Mailbox("fuzz@example.test"), to=(Mailbox("f@example.test"),), subject="fuzz", text="queued")
        await outbox.queue_draft(uow, draft, send_at=datetime.now(UTC) + timedelta(days=300))
    return account


@pytest.fixture(scope="module")
async def fuzz_token(fuzz_account: int, gw_store: Store) -> str:
    """A token of its own: the fuzzer's spending must not use up the budget of the other tests' tokens."""
    async with gw_store.sessions() as session, session.begin():
        return await tokens.create_token(session, [fuzz_account])


@pytest.fixture(scope="module")
async def fuzz_pks(fuzz_account: int, gw_store: Store) -> dict[str, list[int]]:
    """The fuzz account's own objects by type, so fuzzed mutations reach past NOT_FOUND."""
    async with gw_store.sessions() as s:
        return {
            "Account": [fuzz_account],
            "Folder": list(await s.scalars(select(Folder.id).where(Folder.account_id == fuzz_account))),
            "Message": list(await s.scalars(select(Message.id).where(Message.account_id == fuzz_account))),
            "Thread": list(await s.scalars(select(Thread.id).where(Thread.account_id == fuzz_account))),
            "Upload": list(await s.scalars(select(Upload.id).where(Upload.account_id == fuzz_account))),
            "OutboxEntry": list(await s.scalars(select(Outbox.id).where(Outbox.account_id == fuzz_account))),
        }


@pytest.fixture(scope="module")
def fuzz_client(fuzz_server: ServerThread, fuzz_token: str) -> Iterator[httpx.Client]:
    headers = {"authorization": f"Bearer {fuzz_token}"}
    with httpx.Client(base_url=fuzz_server.url, timeout=30, headers=headers) as client:
        yield client


def ids(world: World, own: dict[str, list[int]]) -> st.SearchStrategy[Any]:
    """Real ids of both seeded accounts (not the fuzzer's), of the fuzzer's account, ids that do not exist, and
    junk."""
    real = [to_global("Account", world.alice.id), to_global("Account", world.bob.id)]
    real += [to_global(t, pk) for t in (*NODE_TYPES, "Upload") for pk in (1, 2, 3, 10**12)]
    real += [to_global(t, pk) for t, pks in own.items() for pk in pks]
    return st.one_of(st.sampled_from(real), st.text(max_size=20)).map(nodes.String)


def scalars(world: World, own: dict[str, list[int]]) -> dict[str, st.SearchStrategy[Any]]:
    return {
        "ID": ids(world, own),
        "DateTime": st.one_of(
            st.datetimes(timezones=st.sampled_from([None])).map(lambda d: nodes.String(d.isoformat())),
            st.text(max_size=10).map(nodes.String),
        ),
    }


def check(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    assert "Traceback" not in response.text
    assert 'File "' not in response.text
    if response.status_code in (200, 400, 429):
        body = response.json()
        for error in body.get("errors") or ():
            code = error["extensions"]["code"]
            assert code in CODES
            assert code != "INTERNAL", body


@pytest.mark.slow
@pytest.mark.parametrize("mode", [Mode.POSITIVE, Mode.NEGATIVE], ids=["valid", "invalid"])
def test_fuzzed_queries_never_fail_the_server(
    fuzz_client: httpx.Client, world: World, fuzz_pks: dict[str, list[int]], mode: Mode
) -> None:
    @settings(
        max_examples=EXAMPLES,
        derandomize=not RANDOM,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        database=None,
    )
    @given(query=from_schema(SDL, custom_scalars=scalars(world, fuzz_pks), mode=mode))
    def run(query: object) -> None:
        check(fuzz_client.post("/graphql", json={"query": query}))

    run()


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"[]", b'{"query": 1}', b'{"query": "{ __typename }", "variables": []}', b"\xff\xfe", b'"x"'],
)
def test_malformed_http_bodies_are_4xx(fuzz_client: httpx.Client, body: bytes) -> None:
    response = fuzz_client.post("/graphql", content=body, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500


SEND = """mutation($input: SendMessageInput!) { sendMessage(input: $input) {
    id state outbox { id state sendAt recipients } message { id subject to { name address } } } }"""


def send_inputs(account: int, own: dict[str, list[int]]) -> st.SearchStrategy[dict[str, Any]]:
    """sendMessage inputs of the fuzz account (so they get past NOT_FOUND): hostile text everywhere."""
    text = st.text(max_size=40)
    address = st.one_of(st.emails(), text, st.builds(lambda a, b: f"{a}@{b}", text, text))
    mailbox = st.fixed_dictionaries({"address": address}, optional={"name": st.one_of(st.none(), text)})
    mailboxes = st.one_of(st.none(), st.lists(mailbox, max_size=3))
    messages = [to_global("Message", pk) for pk in own["Message"]]
    upload_ids = [to_global("Upload", pk) for pk in own["Upload"]] + [to_global("Upload", 10**12)]
    when = st.datetimes(timezones=st.sampled_from([None, UTC])).map(lambda d: d.isoformat())
    return st.fixed_dictionaries(
        {"accountId": st.just(to_global("Account", account)), "to": mailboxes},
        optional={
            "cc": mailboxes,
            "bcc": mailboxes,
            "subject": st.one_of(st.none(), text),
            "text": st.one_of(st.none(), text),
            "html": st.one_of(st.none(), text),
            "replyTo": st.one_of(st.none(), st.sampled_from(messages)),
            "forward": st.one_of(st.none(), st.sampled_from(messages)),
            "attachments": st.one_of(st.none(), st.lists(st.sampled_from(upload_ids), max_size=3)),
            "sendAt": st.one_of(st.none(), when),
            "idempotencyKey": st.one_of(st.none(), text),
        },
    )


def test_fuzzed_sends_are_queued_or_refused_never_failed(
    fuzz_client: httpx.Client, fuzz_account: int, fuzz_pks: dict[str, list[int]]
) -> None:
    outcomes: dict[str, int] = {}

    @settings(max_examples=EXAMPLES, derandomize=not RANDOM, deadline=None, database=None)
    @given(fields=send_inputs(fuzz_account, fuzz_pks))
    def run(fields: dict[str, Any]) -> None:
        # Sent as \u-escaped JSON, so that lone surrogates reach the server too.
        body = json.dumps({"query": SEND, "variables": {"input": fields}})
        response = fuzz_client.post("/graphql", content=body, headers={"content-type": "application/json"})
        check(response)
        errors = response.json().get("errors") or ()
        outcome = errors[0]["extensions"]["code"] if errors else "QUEUED"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    run()
    assert outcomes.get("QUEUED", 0) > 0, outcomes
    assert outcomes.get("BAD_USER_INPUT", 0) > 0, outcomes
