"""The operator API through real HTTP against the real gateway, with logins checked against the real Dovecot and
Postfix: add an account, list accounts with their sync state, set new credentials, remove one. A refused login is
a typed problem in the payload, never an error of the request, and stores nothing."""

from __future__ import annotations

import socket
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from gateway.ids import to_global
from gateway.testing import Client, World
from inboxql.commands import new_token
from inboxql.devmail import DovecotServer
from inboxql.devsmtp import PostfixServer
from schema import accounts, tokens
from schema.crypto import CredentialBox, Purpose
from schema.models import Account
from schema.settings import Settings
from schema.unit import Store
from tests.conftest import new_user

ADD = """mutation($i: AddAccountInput!) { addAccount(input: $i) {
    account { id address syncState syncError imap { host port security username } smtp { host port security } }
    problem { code message } } }"""
SET = """mutation($i: SetAccountCredentialsInput!) { setAccountCredentials(input: $i) {
    account { id syncState syncError } problem { code message } } }"""
REMOVE = "mutation($a: ID!) { removeAccount(accountId: $a) { accountId revokedTokens released } }"
LIST = """query($states: [String!], $after: String) { managedAccounts(syncStates: $states, first: 100, after: $after) {
    totalCount nodes { id address syncState syncError imap { host port username } } pageInfo { hasNextPage } } }"""


@pytest.fixture
async def operator(http: httpx.AsyncClient, gw_settings: Settings) -> Client:
    return Client(http, await new_token(gw_settings, [], operator=True, name="onboarding"))


def imap_input(dovecot: DovecotServer, user: str, password: str) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": dovecot.port, "security": "NONE", "username": user, "password": password}


async def count_of(store: Store, username: str) -> int:
    async with store.sessions() as s:
        return int(await s.scalar(select(func.count()).where(Account.imap_username == username)) or 0)


async def test_add_account_checks_the_login_first_and_lists_the_account_with_its_sync_state(
    operator: Client, dovecot: DovecotServer, gw_store: Store, gw_settings: Settings
) -> None:
    user, password = new_user(dovecot)
    refused = await operator.data(ADD, {"i": {"imap": imap_input(dovecot, user, "not-" + password)}})
    assert refused["addAccount"]["account"] is None
    assert refused["addAccount"]["problem"]["code"] == "LOGIN_REFUSED"
    assert "not-" + password not in str(refused)
    assert await count_of(gw_store, user) == 0

    added = (await operator.data(ADD, {"i": {"imap": imap_input(dovecot, user, password)}}))["addAccount"]
    assert added["problem"] is None
    account = added["account"]
    assert account["address"] == f"{user}@127.0.0.1"
    assert (account["syncState"], account["syncError"]) == ("pending", None)
    assert account["imap"] == {"host": "127.0.0.1", "port": dovecot.port, "security": "none", "username": user}
    assert account["smtp"] is None
    async with gw_store.sessions() as s:
        row = await s.scalar(select(Account).where(Account.imap_username == user))
    assert row is not None
    assert account["id"] == to_global("Account", row.id)
    assert row.imap_password is not None
    assert password.encode() not in row.imap_password
    assert CredentialBox(gw_settings.secret_key).open(row.imap_password, Purpose.ACCOUNT) == password

    pending = (await operator.data(LIST, {"states": ["pending"]}))["managedAccounts"]
    assert account["id"] in [n["id"] for n in pending["nodes"]]
    assert {n["syncState"] for n in pending["nodes"]} == {"pending"}
    every = (await operator.data(LIST))["managedAccounts"]
    assert every["totalCount"] >= 3  # Alice's and Bob's too: an operator sees every account
    assert password not in str(every)


async def test_unreachable_and_plaintext_remote_servers_are_typed_problems(
    operator: Client, dovecot: DovecotServer, gw_store: Store
) -> None:
    user, password = new_user(dovecot)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    answers = {
        "closed port": {**imap_input(dovecot, user, password), "port": closed},
        "plaintext to a remote host": {**imap_input(dovecot, user, password), "host": "192.0.2.1"},
    }
    codes = {}
    for what, imap in answers.items():
        payload = (await operator.data(ADD, {"i": {"imap": imap}}))["addAccount"]
        assert payload["account"] is None, what
        codes[what] = payload["problem"]["code"]
    assert codes == {"closed port": "UNREACHABLE", "plaintext to a remote host": "INSECURE"}
    assert await count_of(gw_store, user) == 0


async def test_an_smtp_server_that_cannot_be_verified_stores_nothing(
    operator: Client, dovecot: DovecotServer, postfix: PostfixServer, gw_store: Store
) -> None:
    """Postfix's certificate is signed by the test CA, which the API's accounts do not trust (the system store)."""
    user, password = new_user(dovecot)
    smtp = {"host": postfix.host, "port": postfix.port, "security": "STARTTLS"}
    payload = await operator.data(ADD, {"i": {"imap": imap_input(dovecot, user, password), "smtp": smtp}})
    assert payload["addAccount"]["account"] is None
    assert payload["addAccount"]["problem"]["code"] == "SMTP_UNREACHABLE"
    assert await count_of(gw_store, user) == 0


async def test_bad_input_is_bad_user_input(operator: Client, dovecot: DovecotServer) -> None:
    for imap in (
        {**imap_input(dovecot, "u", "p"), "port": 0},
        {**imap_input(dovecot, "u", "p"), "host": ""},
        {**imap_input(dovecot, "u", "p"), "password": "two\nlines"},
    ):
        answer = await operator.run(ADD, {"i": {"imap": imap}})
        assert [e["extensions"]["code"] for e in answer["errors"]] == ["BAD_USER_INPUT"], imap
    answer = await operator.run(REMOVE, {"a": "not an id"})
    assert [e["extensions"]["code"] for e in answer["errors"]] == ["BAD_USER_INPUT"]
    answer = await operator.run(REMOVE, {"a": to_global("Account", 10**12)})
    assert [e["extensions"]["code"] for e in answer["errors"]] == ["NOT_FOUND"]


async def test_set_credentials_checks_them_then_clears_auth_failed_in_place(
    operator: Client, dovecot: DovecotServer, postfix: PostfixServer, gw_store: Store, gw_settings: Settings
) -> None:
    """An account that sends through Postfix with the IMAP login: both logins are checked."""
    box = CredentialBox(gw_settings.secret_key)
    user, password = new_user(dovecot)
    endpoint = accounts.ImapEndpoint("127.0.0.1", dovecot.port, "none", user, str(dovecot.ca_file))
    smtp = accounts.SmtpSettings(postfix.host, postfix.port, "starttls")
    account_id = await accounts.create(gw_store, box, f"{user}@example.test", endpoint, password, smtp)
    async with gw_store.sessions() as s, s.begin():
        await s.execute(
            update(Account).where(Account.id == account_id).values(sync_state="auth_failed", sync_error="refused")
        )
    dovecot.set_password(user, "the-new-one")
    gid = to_global("Account", account_id)

    wrong = (await operator.data(SET, {"i": {"accountId": gid, "password": "still-wrong"}}))["setAccountCredentials"]
    assert (wrong["account"], wrong["problem"]["code"]) == (None, "LOGIN_REFUSED")
    # IMAP takes it, the submission server (its own password given) does not.
    smtp_wrong = (
        await operator.data(SET, {"i": {"accountId": gid, "password": "the-new-one", "smtpPassword": "nope"}})
    )["setAccountCredentials"]
    assert (smtp_wrong["account"], smtp_wrong["problem"]["code"]) == (None, "SMTP_LOGIN_REFUSED")
    async with gw_store.sessions() as s:
        row = await s.get(Account, account_id)
    assert row is not None
    assert row.imap_password is not None
    assert (row.sync_state, box.open(row.imap_password, Purpose.ACCOUNT)) == ("auth_failed", password)

    done = (await operator.data(SET, {"i": {"accountId": gid, "password": "the-new-one"}}))["setAccountCredentials"]
    assert done == {"account": {"id": gid, "syncState": "pending", "syncError": None}, "problem": None}
    async with gw_store.sessions() as s:
        row = await s.get(Account, account_id)
    assert row is not None
    assert row.imap_password is not None
    assert box.open(row.imap_password, Purpose.ACCOUNT) == "the-new-one"
    assert row.smtp_password is None  # sending keeps using the IMAP login


async def test_remove_account_deletes_it_and_revokes_its_tokens(
    operator: Client, http: httpx.AsyncClient, dovecot: DovecotServer, gw_store: Store, gw_settings: Settings,
    world: World,
) -> None:  # fmt: skip
    user, password = new_user(dovecot)
    added = (await operator.data(ADD, {"i": {"imap": imap_input(dovecot, user, password)}}))["addAccount"]
    gid = added["account"]["id"]
    async with gw_store.sessions() as s:
        account_id = int(await s.scalar(select(Account.id).where(Account.imap_username == user)) or 0)
    reader = Client(http, await new_token(gw_settings, [account_id]))
    assert (await reader.data("{ accounts { nodes { id } } }"))["accounts"]["nodes"] == [{"id": gid}]

    removed = (await operator.data(REMOVE, {"a": gid}))["removeAccount"]
    assert removed == {"accountId": gid, "revokedTokens": 1, "released": True}
    assert await count_of(gw_store, user) == 0
    assert reader.token is not None
    async with gw_store.sessions() as s:
        assert await tokens.lookup(s, reader.token) is None
    # The gateway's token cache may still hold the grant for its period: the account itself is gone.
    after = await reader.post("{ accounts { nodes { id } } }")
    assert after.status_code == 401 or after.json()["data"]["accounts"]["nodes"] == []
    listed = (await operator.data(LIST))["managedAccounts"]["nodes"]
    assert gid not in [n["id"] for n in listed]
    assert to_global("Account", world.alice.id) in [n["id"] for n in listed]
    again = await operator.run(REMOVE, {"a": gid})
    assert [e["extensions"]["code"] for e in again["errors"]] == ["NOT_FOUND"]
