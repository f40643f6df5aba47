"""The operator status page against real parts: a 1,000-message initial sync from the test Dovecot watched through
`/status.json` while it runs, an account whose password is wrong, the refusals, and the page itself in headless
Chromium (Debian's) with every request off this machine aborted."""

from __future__ import annotations

import asyncio
import re
import shutil
import struct
import subprocess
import threading
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Route, ViewportSize, async_playwright

from gateway.testing import ServerThread, World
from inboxql.devmail import DovecotServer
from inboxql.mailgen import generate
from schema import accounts, leases, tokens
from schema.crypto import CredentialBox
from schema.unit import Store
from synccore.account import AccountSync, AuthStopped, Tuning
from tests.conftest import new_user
from tests.gateway.test_graphiql import CHROMIUM_FLAGS

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
SCREENSHOT = Path("/tmp/inboxql-status-page.png")
PHONE: ViewportSize = {"width": 390, "height": 844}
MESSAGES = 1000


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        subprocess.run([str(SCRIPTS / "install-chromium")], check=True, timeout=600)
        found = shutil.which("chromium")
    assert found is not None
    return found


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture(scope="module")
async def operator_token(gw_store: Store, world: World) -> str:
    async with gw_store.sessions() as s, s.begin():
        return await tokens.create_token(s, [], operator=True, name="status-test")


async def _account(store: Store, box: CredentialBox, dovecot: DovecotServer, user: str, password: str) -> int:
    endpoint = accounts.ImapEndpoint(dovecot.host, dovecot.port, "none", user)
    return await accounts.create(store, box, f"{user}@example.test", endpoint, password)


class Sampler:
    """Reads /status.json in a thread of its own every 20 ms, so the samples keep coming while the sync (on the
    test's event loop) parses a batch."""

    def __init__(self, url: str, token: str, account_id: int) -> None:
        self.url, self.token, self.account_id = url, token, account_id
        self.samples: list[dict[str, Any]] = []  # the account's INBOX as each response had it
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="status-sampler", daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10, headers={"authorization": f"Bearer {self.token}"}) as http:
            while not self.stop.is_set():
                body = http.get("/status.json").json()
                account = next(a for a in body["accounts"] if a["accountId"] == self.account_id)
                inbox = [f for f in account["folders"] if f["name"] == "INBOX"]
                if inbox:
                    self.samples.append(inbox[0])
                time.sleep(0.02)

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
async def synced(
    gateway: ServerThread, gw_store: Store, credential_box: CredentialBox, dovecot: DovecotServer, operator_token: str
) -> tuple[int, str, list[dict[str, Any]]]:
    """An account whose 1,000-message initial sync was sampled through /status.json while it ran: its id, address
    and the INBOX samples. A lease is held for it as a sync process holds one, so the page names the holder."""
    user, password = new_user(dovecot)
    dovecot.append(user, password, "INBOX", list(generate(MESSAGES, seed=1301)))
    account_id = await _account(gw_store, credential_box, dovecot, user, password)
    assert await leases.acquire(gw_store, account_id, "status-test:1:ab12cd34", 300)
    with Sampler(gateway.url, operator_token, account_id) as sampler:
        await AccountSync(gw_store, credential_box, account_id, Tuning()).run_once()
        await asyncio.sleep(0.2)  # a last sample after the sync ended
    return account_id, f"{user}@example.test", sampler.samples


@pytest.fixture(scope="module")
async def refused(gw_store: Store, credential_box: CredentialBox, dovecot: DovecotServer) -> tuple[int, str]:
    """An account whose password is wrong, after the sync tried it: its id and the real password."""
    user, password = new_user(dovecot)
    account_id = await _account(gw_store, credential_box, dovecot, user, password + "-wrong")
    with pytest.raises(AuthStopped):
        await AccountSync(gw_store, credential_box, account_id, Tuning()).run_once()
    return account_id, password


async def _status(http: httpx.AsyncClient, token: str | None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token is not None else {}
    return await http.get("/status.json", headers=headers)


async def test_the_json_shows_an_initial_sync_growing_to_1000_of_1000(
    http: httpx.AsyncClient, operator_token: str, synced: tuple[int, str, list[dict[str, Any]]]
) -> None:
    account_id, address, samples = synced
    seen = [(s["mirrored"], s["serverCount"], s["progress"]) for s in samples]
    # "of N" before the first batch: unknown ("0 of ?") only between the folder's discovery and its STATUS.
    assert {total for mirrored, total, _ in seen if mirrored > 0} == {MESSAGES}
    assert {p for _, total, p in seen if total is None} <= {"0 of ?"}
    during = [p for mirrored, _, p in seen if 0 < mirrored < MESSAGES]
    assert during, f"no intermediate value among {len(seen)} samples: {sorted(set(seen))}"
    assert [m for m, _, _ in seen] == sorted(m for m, _, _ in seen)  # it only grows
    assert seen[-1] == (MESSAGES, MESSAGES, "1,000 of 1,000")

    body = (await _status(http, operator_token)).json()
    account = next(a for a in body["accounts"] if a["accountId"] == account_id)
    assert account["address"] == address
    assert account["syncState"] == "ready"
    assert (account["syncError"], account["syncErrorAt"]) == (None, None)
    assert account["leaseHolder"] == "status-test:1:ab12cd34"
    assert account["leaseLive"] is True
    assert account["changeLogHead"] > MESSAGES  # every message logged, and more (threads, folders)
    assert account["serverCount"] == MESSAGES
    inbox = next(f for f in account["folders"] if f["name"] == "INBOX")
    assert (inbox["syncState"], inbox["progress"]) == ("follow", "1,000 of 1,000")

    only = await http.get(
        "/status.json", params={"account": account_id}, headers={"authorization": f"Bearer {operator_token}"}
    )
    assert [a["accountId"] for a in only.json()["accounts"]] == [account_id]


async def test_an_account_with_a_wrong_password_shows_its_error_and_when(
    http: httpx.AsyncClient, operator_token: str, refused: tuple[int, str]
) -> None:
    account_id, password = refused
    body = (await _status(http, operator_token)).json()
    account = next(a for a in body["accounts"] if a["accountId"] == account_id)
    assert account["syncState"] == "auth_failed"
    assert "AUTHENTICATIONFAILED" in account["syncError"]
    assert account["syncErrorAt"] is not None
    assert password not in str(body)


async def test_only_an_operator_token_reads_the_status(
    http: httpx.AsyncClient, world: World, operator_token: str
) -> None:
    anonymous = await _status(http, None)
    assert anonymous.status_code == 401
    assert anonymous.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    unknown = await _status(http, "iqt_" + "x" * 40)
    assert unknown.status_code == 401
    for account_token in (world.token_alice, world.token_both):
        refused = await _status(http, account_token)
        assert refused.status_code == 403
        assert refused.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
        assert "accounts" not in refused.json()
    assert (await _status(http, operator_token)).status_code == 200
    page = await http.get("/status")  # the page holds no data: it loads without a token
    assert page.status_code == 200
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert operator_token not in page.text


def _png_pixels(data: bytes) -> tuple[int, int, bytes]:
    """Width, height and the decompressed scanlines of a PNG (stdlib only: no imaging library here)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, width, height, idat = 8, 0, 0, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    return width, height, zlib.decompress(idat)


async def test_the_page_shows_the_sync_on_a_phone_with_nothing_fetched_from_outside(
    browser: Browser,
    gateway: ServerThread,
    operator_token: str,
    world: World,
    synced: tuple[int, str, list[dict[str, Any]]],
    refused: tuple[int, str],
) -> None:
    account_id, address, _ = synced
    context = await browser.new_context(viewport=PHONE, device_scale_factor=1)
    page = await context.new_page()
    outside: list[str] = []
    requested: list[str] = []

    async def only_loopback(route: Route) -> None:
        requested.append(route.request.url)
        if route.request.url.startswith(gateway.url):
            await route.continue_()
        else:
            outside.append(route.request.url)
            await route.abort()

    await page.route("**/*", only_loopback)
    await page.goto(f"{gateway.url}/status#token={operator_token}", wait_until="load")
    card = page.locator(f'[data-account="{account_id}"]')
    inbox = card.locator('[data-folder="INBOX"] .progress-text')
    await inbox.wait_for(timeout=30_000)
    assert await inbox.inner_text() == "1,000 of 1,000"
    assert address in await card.inner_text()
    assert "status-test:1:ab12cd34" in await card.inner_text()
    assert operator_token not in page.url
    assert "#" not in page.url
    assert not await page.locator("#login").is_visible()
    failed = await page.locator(f'[data-account="{refused[0]}"]').inner_text()
    assert "auth_failed" in failed
    assert "AUTHENTICATIONFAILED" in failed
    assert re.search(r"\(\d+ s ago\)", failed), failed  # when
    # Usable on a phone: nothing wider than the screen.
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    await card.scroll_into_view_if_needed()
    shot = await page.screenshot(path=str(SCREENSHOT), full_page=False)
    width, height, pixels = _png_pixels(shot)
    assert (width, height) == (PHONE["width"], PHONE["height"])
    assert len(set(pixels)) > 16  # drawn, not a blank page
    # It keeps polling: a second request for the data after the first.
    await page.wait_for_timeout(2500)
    assert len([u for u in requested if u.endswith("/status.json")]) >= 2
    assert not [u for u in requested if "iqt_" in u]
    assert outside == []

    # An account's token: the page says it is refused and shows no account.
    denied = await context.new_page()
    await denied.goto(f"{gateway.url}/status#token={world.token_alice}", wait_until="load")
    problem = denied.locator("#problem")
    await problem.get_by_text("operator token").wait_for(timeout=30_000)
    assert await denied.locator("[data-account]").count() == 0
    assert await denied.locator("#login").is_visible()
    await context.close()


@pytest.fixture(autouse=True)
def _no_leftover_threads() -> Iterator[None]:
    yield
    assert not [t for t in threading.enumerate() if t.name == "status-sampler"]
