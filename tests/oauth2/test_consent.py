"""The consent flow end to end: an operator's start link, the authorization server's login-and-consent page in
headless Chromium, the gateway's callback, an account that syncs; re-authorization after a revoked grant (visible
in the API first); and every bad callback answered with the error page, creating nothing."""

from __future__ import annotations

import contextlib
import re
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from playwright.async_api import Browser, Response, async_playwright
from sqlalchemy import func, select

import oauth
from gateway.config import GatewayConfig
from gateway.ids import from_global
from gateway.testing import Client, ServerThread, start_gateway
from inboxql.devmail import DovecotServer
from schema import tokens
from schema.crypto import CredentialBox, Purpose
from schema.models import Account
from schema.settings import Settings
from schema.unit import Store
from synccore.account import AccountSync, Tuning
from synccore.tokens import TokenKeeper
from tests.gateway.test_graphiql import CHROMIUM_FLAGS
from tests.imap.test_client import message
from tests.oauth2.conftest import CLIENT, OTHER_CLIENT, PROVIDER, as_browser
from tests.oauth2.test_refresh import account_row, inbox_count
from tests.oauth2server import AuthServer

LINK = """mutation($input: OAuth2ConsentInput!) { createOAuth2ConsentLink(input: $input) { url expiresAt } }"""
ACCOUNTS = """{ accounts { edges { node { syncState syncError } } } }"""
MANAGED = """{ managedAccounts { edges { node { id syncState syncError oauth2Provider } } } }"""


@pytest.fixture(scope="module")
def gateway(settings: Settings, auth_server: AuthServer) -> Iterator[ServerThread]:
    env = auth_server.env(PROVIDER, CLIENT[0])
    server = start_gateway(settings, GatewayConfig(webhooks=False, oauth2_env=tuple(sorted(env.items()))))
    callback = f"{server.url}/oauth2/{PROVIDER}/callback"
    auth_server.add_client(*CLIENT, (callback,))
    auth_server.add_client(*OTHER_CLIENT, (callback,))  # registered at the same address: only the code differs
    yield server
    server.stop()


@pytest.fixture
async def http(gateway: ServerThread) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        yield client


@pytest.fixture
async def operator(store: Store, http: httpx.AsyncClient) -> Client:
    async with store.sessions() as s, s.begin():
        token = await tokens.create_token(s, [], operator=True, name="consent tests")
    return Client(http, token)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (scripts/install-chromium)")
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


def account_pk(global_id: str) -> int:
    kind, pk = from_global(global_id)
    assert kind == "Account"
    return pk


async def start_link(operator: Client, dovecot: DovecotServer, user: str) -> str:
    data = await operator.data(
        LINK,
        {
            "input": {
                "provider": PROVIDER,
                "login": user,
                "imap": {"host": dovecot.host, "port": dovecot.port, "security": "NONE"},
            }
        },
    )
    url: str = data["createOAuth2ConsentLink"]["url"]
    return url


async def accounts_of(store: Store, user: str) -> int:
    async with store.sessions() as s:
        return int(await s.scalar(select(func.count()).select_from(Account).where(Account.imap_username == user)) or 0)


async def to_provider(http: httpx.AsyncClient, link: str) -> str:
    """GET the start link: the gateway's 302 to the provider's consent page."""
    with as_browser():
        started = await http.get(link)
    assert started.status_code == 302, started.text
    return started.headers["location"]


async def consent(authorize_url: str, user: str, password: str, decision: str = "allow") -> str:
    """What the user does at the provider, over HTTP: returns where the provider sends the browser back."""
    with as_browser():
        async with httpx.AsyncClient(timeout=30) as provider:
            page = await provider.get(authorize_url)
            assert page.status_code == 200
            assert "Sign in and consent" in page.text
            form = {"username": user, "password": password, "decision": decision}
            answer = await provider.post(authorize_url, data=form)
    assert answer.status_code == 302, answer.text
    return answer.headers["location"]


async def back_to_gateway(http: httpx.AsyncClient, url: str) -> httpx.Response:
    """The browser following the provider's redirect to the gateway's callback."""
    with as_browser():
        return await http.get(url)


def assert_error_page(response: httpx.Response, words: str) -> None:
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert "The mailbox was not connected" in response.text
    assert words in response.text, response.text
    assert response.headers["cache-control"] == "no-store"


async def test_consent_in_a_browser_creates_an_account_that_syncs(
    browser: Browser,
    gateway: ServerThread,
    operator: Client,
    oauth_dovecot: DovecotServer,
    auth_server: AuthServer,
    oauth_user: tuple[str, str],
    store: Store,
    credential_box: CredentialBox,
    keeper: TokenKeeper,
) -> None:
    user, password = oauth_user
    oauth_dovecot.append(user, password, "INBOX", [message(1), message(2)])
    link = await start_link(operator, oauth_dovecot, user)
    page = await browser.new_page()
    seen: list[str] = []  # every URL and response body the browser got

    async def record(response: Response) -> None:
        seen.append(response.url)
        if response.status < 300 or response.status >= 400:
            with contextlib.suppress(Exception):  # a body already gone (navigation); its URL is kept
                seen.append((await response.body()).decode(errors="replace"))

    page.on("response", record)
    await page.goto(link)
    assert await page.title() == "Sign in and consent"
    assert f"{auth_server.url}/authorize?" in page.url
    assert parse_qs(urlsplit(page.url).query)["code_challenge_method"] == ["S256"]
    await page.fill("#username", user)
    await page.fill("#password", password)
    await page.click("#allow")
    await page.wait_for_url(re.compile(r".*/oauth2/done\?account="))
    assert await page.title() == "Mailbox connected"
    account_id = account_pk(parse_qs(urlsplit(page.url).query)["account"][0])
    await page.close()

    row = await account_row(store, account_id)
    assert (row.imap_username, row.oauth2_provider, row.imap_password) == (user, PROVIDER, None)
    assert row.oauth2_refresh_token is not None
    refresh_token = credential_box.open(row.oauth2_refresh_token, Purpose.ACCOUNT)
    issued = auth_server.state.by_refresh(refresh_token)
    assert issued is not None
    assert issued.user == user
    assert not any(refresh_token in text for text in seen), "the refresh token reached the browser"
    assert not any(issued.access_token in text for text in seen), "the access token reached the browser"

    await AccountSync(store, credential_box, account_id, Tuning(poll_interval=0.2), tokens=keeper).run_once()
    assert await inbox_count(store, account_id) == 2
    assert (await account_row(store, account_id)).sync_state == "ready"


async def test_a_revoked_grant_shows_in_the_api_and_a_new_consent_reauthorizes_the_same_account(
    http: httpx.AsyncClient,
    operator: Client,
    oauth_dovecot: DovecotServer,
    auth_server: AuthServer,
    oauth_user: tuple[str, str],
    store: Store,
    credential_box: CredentialBox,
    keeper: TokenKeeper,
) -> None:
    user, password = oauth_user
    back = await consent(await to_provider(http, await start_link(operator, oauth_dovecot, user)), user, password)
    done = await back_to_gateway(http, back)
    assert done.status_code == 303
    account_id = account_pk(parse_qs(urlsplit(done.headers["location"]).query)["account"][0])
    tuning = Tuning(poll_interval=0.2, backoff_base=0.01, backoff_cap=0.05)
    await AccountSync(store, credential_box, account_id, tuning, tokens=keeper).run_once()

    auth_server.revoke_user(user)
    await AccountSync(store, credential_box, account_id, tuning, tokens=keeper).run_forever()  # stops
    nodes = [e["node"] for e in (await operator.data(MANAGED))["managedAccounts"]["edges"]]
    shown = next(n for n in nodes if account_pk(n["id"]) == account_id)
    assert shown["syncState"] == "needs_consent"
    assert "consent again" in shown["syncError"]
    assert shown["oauth2Provider"] == PROVIDER
    async with store.sessions() as s, s.begin():
        reader = Client(http, await tokens.create_token(s, [account_id], read_only=True))
    mine = (await reader.data(ACCOUNTS))["accounts"]["edges"][0]["node"]
    assert (mine["syncState"], mine["syncError"]) == ("needs_consent", shown["syncError"])

    back = await consent(await to_provider(http, await start_link(operator, oauth_dovecot, user)), user, password)
    again = await back_to_gateway(http, back)
    assert again.status_code == 303
    assert account_pk(parse_qs(urlsplit(again.headers["location"]).query)["account"][0]) == account_id
    assert await accounts_of(store, user) == 1
    assert (await account_row(store, account_id)).sync_state == "pending"
    oauth_dovecot.append(user, password, "INBOX", [message(3)])
    await AccountSync(store, credential_box, account_id, tuning, tokens=keeper).run_once()
    assert (await account_row(store, account_id)).sync_state == "ready"
    assert await inbox_count(store, account_id) == 1


async def test_a_callback_without_state_is_refused(
    http: httpx.AsyncClient, store: Store, oauth_user: tuple[str, str]
) -> None:
    assert_error_page(await http.get(f"/oauth2/{PROVIDER}/callback?code=abc"), "carried no state")
    assert_error_page(await http.get(f"/oauth2/{PROVIDER}/callback?code=abc&state=forged"), "not asked for here")


async def test_a_reused_state_is_refused_and_creates_nothing_more(
    http: httpx.AsyncClient,
    operator: Client,
    oauth_dovecot: DovecotServer,
    oauth_user: tuple[str, str],
    store: Store,
) -> None:
    user, password = oauth_user
    back = await consent(await to_provider(http, await start_link(operator, oauth_dovecot, user)), user, password)
    assert (await back_to_gateway(http, back)).status_code == 303
    assert await accounts_of(store, user) == 1
    assert_error_page(await back_to_gateway(http, back), "used already")
    assert await accounts_of(store, user) == 1


async def test_an_error_from_the_provider_is_shown_and_creates_nothing(
    http: httpx.AsyncClient,
    operator: Client,
    oauth_dovecot: DovecotServer,
    oauth_user: tuple[str, str],
    store: Store,
) -> None:
    user, password = oauth_user
    back = await consent(
        await to_provider(http, await start_link(operator, oauth_dovecot, user)), user, password, decision="deny"
    )
    assert "error=access_denied" in back
    assert_error_page(await back_to_gateway(http, back), "did not grant access (access_denied)")
    assert await accounts_of(store, user) == 0


async def test_a_code_issued_to_another_client_is_refused_and_creates_nothing(
    http: httpx.AsyncClient,
    gateway: ServerThread,
    operator: Client,
    oauth_dovecot: DovecotServer,
    auth_server: AuthServer,
    oauth_user: tuple[str, str],
    store: Store,
) -> None:
    """A code the user granted another app, pasted into our callback with a state of ours: the token endpoint
    refuses to give it to us (RFC 6749 §4.1.3: the code was issued to another client)."""
    user, password = oauth_user
    ours = await to_provider(http, await start_link(operator, oauth_dovecot, user))
    state = parse_qs(urlsplit(ours).query)["state"][0]
    other = oauth.provider("other", auth_server.env("other", OTHER_CLIENT[0]))
    theirs = oauth.authorization_url(
        other, f"{gateway.url}/oauth2/{PROVIDER}/callback", "their-state", oauth.new_verifier()
    )
    back = await consent(theirs, user, password)
    code = parse_qs(urlsplit(back).query)["code"][0]
    answer = await back_to_gateway(http, f"/oauth2/{PROVIDER}/callback?{urlencode({'code': code, 'state': state})}")
    assert_error_page(answer, "refused the authorization code (invalid_grant)")
    assert await accounts_of(store, user) == 0


async def test_start_links_are_minted_by_operators_and_used_once(
    http: httpx.AsyncClient,
    gateway: ServerThread,
    operator: Client,
    oauth_dovecot: DovecotServer,
    oauth_user: tuple[str, str],
) -> None:
    user, _ = oauth_user
    assert_error_page(await http.get(f"/oauth2/{PROVIDER}/start"), "needs a start link")
    assert_error_page(await http.get(f"/oauth2/{PROVIDER}/start?link={secrets.token_urlsafe(32)}"), "used already")
    link = await start_link(operator, oauth_dovecot, user)
    await to_provider(http, link)
    assert_error_page(await http.get(link), "used already or has expired")
    anonymous = await Client(http, None).run(
        LINK, {"input": {"provider": PROVIDER, "login": user, "imap": {"host": "h", "port": 1, "security": "NONE"}}}
    )
    assert anonymous["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    unknown = await operator.run(
        LINK, {"input": {"provider": "nope", "login": user, "imap": {"host": "h", "port": 1, "security": "NONE"}}}
    )
    assert unknown["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
