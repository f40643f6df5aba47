"""GraphiQL renders and runs a query in headless Chromium with every request off this machine refused.

Assets come from scripts/vendor-graphiql (npm, at build time) and Chromium from Debian
(scripts/install-chromium); this test runs either script when its result is missing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from playwright.async_api import Browser, Route, async_playwright

from gateway import graphiql
from gateway.testing import ServerThread, World

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
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


async def test_graphiql_runs_a_query_offline(browser: Browser, gateway: ServerThread, world: World) -> None:
    page = await browser.new_page()
    outside: list[str] = []

    async def only_loopback(route: Route) -> None:
        if route.request.url.startswith(gateway.url):
            await route.continue_()
        else:
            outside.append(route.request.url)
            await route.abort()

    await page.route("**/*", only_loopback)
    params = {
        "q": "{ accounts { nodes { address } } }",  # `query` would run it instead of opening GraphiQL
        "headers": json.dumps({"Authorization": f"Bearer {world.token_alice}"}),
    }
    await page.goto(f"{gateway.url}/graphql?{urlencode(params)}", wait_until="load")
    await page.wait_for_selector(".graphiql-execute-button", timeout=30_000)
    await page.click(".graphiql-execute-button")
    result = page.locator(".result-window")
    await result.get_by_text("alice@example.test").wait_for(timeout=30_000)
    assert "bob@other.test" not in await result.inner_text()
    assert outside == []
    await page.close()
