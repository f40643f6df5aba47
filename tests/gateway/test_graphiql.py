"""GraphiQL renders and runs a query, and a subscription over graphql-transport-ws, in headless Chromium with
every request off this machine refused.

Assets come from scripts/vendor-graphiql (npm, at build time) and Chromium from Debian
(scripts/install-chromium); this test runs either script when its result is missing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from playwright.async_api import Browser, Page, Route, WebSocket, async_playwright

from gateway import graphiql
from gateway.ids import to_global
from gateway.testing import ServerThread, World, deliver, start_gateway
from schema.crypto import CredentialBox
from schema.settings import Settings
from schema.unit import Store
from tests.gateway.test_changes import CURSOR, fresh_account, mail

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
SCREENSHOT = Path("/tmp/graphiql-subscription.png")
# As python-svc.md says: without the background-networking flags Chromium tries hosts it cannot reach.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def chromium() -> str:
    if graphiql.missing_assets():
        subprocess.run([str(SCRIPTS / "vendor-graphiql")], check=True, timeout=600)
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


def link(gateway: ServerThread, query: str, token: str) -> str:
    """A GraphiQL link as the demo prints it: the query in the query string, the token in the fragment."""
    headers = json.dumps({"Authorization": f"Bearer {token}"})
    # `q`, not `query`: `query` would run it instead of opening GraphiQL.
    return f"{gateway.url}/graphql?{urlencode({'q': query})}#{urlencode({'headers': headers})}"


async def test_graphiql_runs_a_query_offline_and_the_token_never_leaves_the_page(
    browser: Browser, gateway: ServerThread, world: World
) -> None:
    """The token is in the link's fragment: the page uses it, no request the page makes carries it in its URL,
    and it is out of the address bar once read."""
    page = await browser.new_page()
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
    await page.goto(link(gateway, "{ accounts { nodes { address } } }", world.token_alice), wait_until="load")
    await page.wait_for_selector(".graphiql-execute-button", timeout=30_000)
    assert world.token_alice not in page.url
    assert "#" not in page.url
    await page.click(".graphiql-execute-button")
    result = page.locator(".result-window")
    await result.get_by_text("alice@example.test").wait_for(timeout=30_000)
    assert "bob@other.test" not in await result.inner_text()
    assert outside == []
    assert requested
    assert not [u for u in requested if "iqt_" in u or "headers" in u]
    await page.close()


async def test_an_old_headers_link_is_neither_read_nor_logged_with_its_token(
    gw_settings: Settings, world: World
) -> None:
    """`?headers=` (the old links) sent the token to the server: its access log now writes it redacted."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    collect = Collect()
    server = start_gateway(gw_settings, access_log=True)
    logging.getLogger("uvicorn.access").addHandler(collect)
    try:
        headers = json.dumps({"Authorization": f"Bearer {world.token_alice}"})
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            page = await http.get("/graphql", params={"headers": headers}, headers={"accept": "text/html"})
            assert page.status_code in (200, 503)  # 503: assets not vendored; the page is not the point here
            await http.get(f"/attachments/1?t={world.token_bob}")
    finally:
        logging.getLogger("uvicorn.access").removeHandler(collect)
        server.stop()
    assert len(lines) == 2
    assert "/graphql?headers=[redacted]" in lines[0]
    assert not [line for line in lines if world.token_alice in line or world.token_bob in line]
    assert "iqt_[redacted]" in lines[1]


class Wire:
    """A page's graphql-transport-ws messages as Chromium sends and receives them, and the requests it refused."""

    def __init__(self, page: Page) -> None:
        self.sent: list[dict[str, Any]] = []
        self.received: list[dict[str, Any]] = []
        self.outside: list[str] = []  # requests for anything but the gateway, refused
        page.on("websocket", self._opened)

    def _opened(self, ws: WebSocket) -> None:
        ws.on("framesent", lambda payload: self.sent.append(json.loads(payload)))
        ws.on("framereceived", lambda payload: self.received.append(json.loads(payload)))

    def of(self, kind: str, sent: bool = True) -> list[dict[str, Any]]:
        return [m for m in (self.sent if sent else self.received) if m.get("type") == kind]

    async def until(self, done: Callable[[], bool], timeout: float = 15) -> None:
        async with asyncio.timeout(timeout):
            while not done():
                await asyncio.sleep(0.05)


async def open_graphiql(browser: Browser, gateway: ServerThread, query: str, token: str) -> tuple[Page, Wire]:
    """GraphiQL with `query` in its editor and the token in its headers editor, as a person would open it."""
    page = await browser.new_page(viewport={"width": 1400, "height": 800})
    wire = Wire(page)

    async def only_loopback(route: Route) -> None:
        if route.request.url.startswith(gateway.url):
            await route.continue_()
        else:
            wire.outside.append(route.request.url)
            await route.abort()

    await page.route("**/*", only_loopback)
    await page.goto(link(gateway, query, token), wait_until="load")
    await page.wait_for_selector(".graphiql-execute-button", timeout=30_000)
    return page, wire


async def test_graphiql_streams_a_subscription_over_the_websocket(
    browser: Browser, gateway: ServerThread, gw_store: Store, credential_box: CredentialBox, http: httpx.AsyncClient
) -> None:
    fresh = await fresh_account(gw_store, credential_box, http)
    token = fresh.client.token or ""
    start = (await fresh.client.data(CURSOR, {"acc": fresh.gid}))["changesCursor"]
    # From the cursor of now: nothing is missed even if the message lands before the subscription is set up.
    query = f'subscription {{ changes(accountId: "{fresh.gid}", after: "{start}") {{ cursor operation objectType }} }}'
    page, wire = await open_graphiql(browser, gateway, query, token)
    await page.click(".graphiql-execute-button")
    await wire.until(lambda: bool(wire.of("subscribe")))
    # The token of the headers editor, in connection_init as the gateway reads it.
    assert [m.get("payload") for m in wire.of("connection_init")] == [{"authorization": f"Bearer {token}"}]
    assert wire.of("connection_ack", sent=False)

    await deliver(gw_store, fresh.id, fresh.inbox, [(mail("seen in GraphiQL"), [])])

    def events() -> list[dict[str, Any]]:
        return [m["payload"]["data"]["changes"] for m in wire.of("next", sent=False)]

    await wire.until(lambda: any(e["objectType"] == "MESSAGE" for e in events()))
    await asyncio.sleep(0.5)  # the rest of the delivery's batch
    last = events()[-1]
    result = page.locator(".result-window")
    await result.get_by_text(last["cursor"]).wait_for(timeout=10_000)
    shown = await result.inner_text()
    assert f'"objectType": "{last["objectType"]}"' in shown
    assert f'"operation": "{last["operation"]}"' in shown
    assert wire.outside == []
    await page.screenshot(path=str(SCREENSHOT))
    await page.close()


async def test_the_websocket_follows_the_headers_editor_and_a_refusal_shows(
    browser: Browser, gateway: ServerThread, world: World
) -> None:
    gid = to_global("Account", world.alice.id)
    page, wire = await open_graphiql(
        browser, gateway, f'subscription {{ changes(accountId: "{gid}") {{ cursor }} }}', world.token_alice
    )
    execute = page.locator(".graphiql-execute-button")
    await execute.click()
    await wire.until(lambda: bool(wire.of("subscribe")))
    assert wire.of("connection_ack", sent=False)
    await execute.click()  # stops the subscription
    await wire.until(lambda: bool(wire.of("complete")))

    # A person pastes another token into the headers editor and runs the subscription again.
    await page.locator(".graphiql-editor-tool .graphiql-editor:not(.hidden) .CodeMirror").click()
    await page.keyboard.press("Control+A")
    await page.keyboard.insert_text(json.dumps({"Authorization": "Bearer not-a-token"}))
    await execute.click()
    # The gateway closes the socket with 4403; the page does not retry it, so GraphiQL shows it at once.
    result = page.locator(".result-window")
    await result.get_by_text("Socket closed with event 4403 Forbidden").first.wait_for(timeout=10_000)
    payloads = [m.get("payload") for m in wire.of("connection_init")]
    assert payloads == [{"authorization": f"Bearer {world.token_alice}"}, {"authorization": "Bearer not-a-token"}]
    await page.close()
