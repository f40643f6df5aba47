"""`GET /debug/profile` on the real gateway (uvicorn, real HTTP): the always-on sampler's flame graph shows a busy
function that ran on the gateway's loop; loopback clients and operator tokens get it, account tokens and remote
clients without a token do not; `inboxql profile` writes it to a file; headless Chromium renders it offline."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Route, async_playwright

from gateway.testing import ServerThread, World
from inboxql.commands import new_token
from ops.sampler import Sampler
from schema.settings import Settings
from tests.gateway.test_graphiql import CHROMIUM_FLAGS

ROOT = Path(__file__).resolve().parents[2]
BUSY = "tests.gateway.test_profile:burn_on_the_gateway_loop"
SCREENSHOT = Path("/tmp/profile-flame-graph.png")
REMOTE = {"X-Forwarded-For": "203.0.113.7"}  # a client behind the (trusted, loopback) proxy


def burn_on_the_gateway_loop(seconds: float) -> None:
    """A blocking call on the gateway's event loop, as a handler doing CPU work in place would make."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@pytest.fixture(scope="module")
async def busy_gateway(gateway: ServerThread) -> ServerThread:
    """The gateway after its loop spent 1 s in `burn_on_the_gateway_loop`."""
    sampler: Sampler = gateway.app.state.sampler
    assert sampler.running
    assert sampler.loop is not None
    sampler.loop.call_soon_threadsafe(burn_on_the_gateway_loop, 1.0)
    await asyncio.sleep(1.4)
    return gateway


@pytest.fixture(scope="module")
async def operator_token(gw_settings: Settings) -> str:
    return await new_token(gw_settings, [], operator=True, name="profiling")


async def test_a_loopback_client_gets_the_flame_graph_with_the_busy_function(
    busy_gateway: ServerThread, http: httpx.AsyncClient
) -> None:
    got = await http.get("/debug/profile", params={"seconds": "60"})
    assert got.status_code == 200, got.text
    assert got.headers["content-type"] == "image/svg+xml"
    assert got.headers["content-security-policy"] == "default-src 'none'; style-src 'unsafe-inline'"
    assert int(got.headers["x-profile-samples"]) > 0
    root = ET.fromstring(got.content)  # well-formed
    titles = [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}title")]
    burning = [t for t in titles if t.startswith(BUSY + " (")]
    assert burning, titles[:20]

    collapsed = (await http.get("/debug/profile", params={"seconds": "60", "format": "collapsed"})).text
    lines = [line for line in collapsed.splitlines() if line.rsplit(" ", 1)[0].endswith(";" + BUSY)]
    # 1 s at 29 Hz: about 29 samples, fewer when the sampler waits for the GIL behind the burning loop.
    assert sum(int(line.rsplit(" ", 1)[1]) for line in lines) >= 10, collapsed[:2000]

    speedscope = (await http.get("/debug/profile", params={"format": "speedscope"})).json()
    assert BUSY in [f["name"] for f in speedscope["shared"]["frames"]]


async def test_an_operator_token_gets_it_from_anywhere(
    busy_gateway: ServerThread, http: httpx.AsyncClient, operator_token: str
) -> None:
    got = await http.get(
        "/debug/profile",
        params={"seconds": "60", "format": "collapsed"},
        headers={**REMOTE, "Authorization": f"Bearer {operator_token}"},
    )
    assert got.status_code == 200, got.text
    assert BUSY in got.text


async def test_account_tokens_and_remote_clients_without_a_token_are_refused(
    busy_gateway: ServerThread, http: httpx.AsyncClient, world: World
) -> None:
    # An account's token is refused even from loopback: a token present is what the request is judged by.
    account = await http.get("/debug/profile", headers={"Authorization": f"Bearer {world.token_alice}"})
    assert account.status_code == 403
    assert account.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert "operator token" in account.json()["errors"][0]["message"]

    remote = await http.get("/debug/profile", headers=REMOTE)
    assert remote.status_code == 401
    assert remote.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"

    unknown = await http.get("/debug/profile", headers={"Authorization": "Bearer iqt_not-a-token"})
    assert unknown.status_code == 401
    for refused in (account, remote, unknown):
        assert BUSY not in refused.text
        assert refused.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"seconds": "0"}, "between 1 and 600"),
        ({"seconds": "9999"}, "between 1 and 600"),
        ({"seconds": "soon"}, "a number"),
        ({"format": "png"}, "svg, collapsed, speedscope"),
    ],
)
async def test_bad_arguments_are_a_json_400(http: httpx.AsyncClient, params: dict[str, str], message: str) -> None:
    got = await http.get("/debug/profile", params=params)
    assert got.status_code == 400
    error = got.json()["errors"][0]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert message in error["message"]


def _inboxql(tmp_path: Path, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INBOXQL_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")  # the command must not make a key ring: it needs none
    if token is not None:
        env["INBOXQL_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "inboxql.cli", "profile", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_inboxql_profile_writes_the_svg(
    busy_gateway: ServerThread, tmp_path: Path, operator_token: str, world: World
) -> None:
    out = tmp_path / "gateway.svg"
    done = await asyncio.to_thread(_inboxql, tmp_path, "--url", busy_gateway.url, "--seconds", "60", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert f"written to {out}" in done.stderr
    assert BUSY in out.read_text()
    ET.parse(out)
    assert not (tmp_path / "config").exists()

    collapsed = await asyncio.to_thread(
        _inboxql, tmp_path, "--url", busy_gateway.url + "/debug/profile", "--format", "collapsed", token=operator_token
    )
    assert collapsed.returncode == 0, collapsed.stderr
    assert BUSY in collapsed.stdout

    refused = await asyncio.to_thread(_inboxql, tmp_path, "--url", busy_gateway.url, token=world.token_bob)
    assert refused.returncode == 1
    assert "answered 403" in refused.stderr
    assert "operator token" in refused.stderr

    closed = await asyncio.to_thread(_inboxql, tmp_path, "--url", "http://127.0.0.1:9")
    assert closed.returncode == 1
    assert "cannot reach http://127.0.0.1:9/debug/profile" in closed.stderr


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium (scripts/install-chromium when it is missing); the page needs no GraphiQL assets."""
    found = shutil.which("chromium")
    if found is None:
        subprocess.run([str(ROOT / "scripts" / "install-chromium")], check=True, timeout=600)
        found = shutil.which("chromium")
    assert found is not None
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=found, args=CHROMIUM_FLAGS, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


# Counts what a screenshot holds, decoded by Chromium itself: pixels that are not the page's background, pixels of
# the frames' warm colours, and distinct colours.
PIXELS = """async (src) => {
  const img = new Image();
  img.src = src;
  await img.decode();
  const canvas = document.createElement('canvas');
  canvas.width = img.width; canvas.height = img.height;
  const ctx = canvas.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const data = ctx.getImageData(0, 0, img.width, img.height).data;
  let painted = 0, warm = 0; const colours = new Set();
  for (let i = 0; i < data.length; i += 4) {
    const [r, g, b] = [data[i], data[i + 1], data[i + 2]];
    colours.add((r << 16) | (g << 8) | b);
    if (!(r > 240 && g > 240 && b > 230)) painted++;
    if (r > 200 && g < 200 && b < 160) warm++;
  }
  return {painted, warm, total: data.length / 4, colours: colours.size};
}"""


async def test_chromium_renders_the_flame_graph_offline(busy_gateway: ServerThread, browser: Browser) -> None:
    page = await browser.new_page(viewport={"width": 1220, "height": 900})
    requested: list[str] = []
    outside: list[str] = []

    async def only_the_gateway(route: Route) -> None:
        requested.append(route.request.url)
        if route.request.url.startswith(busy_gateway.url):
            await route.continue_()
        else:
            outside.append(route.request.url)
            await route.abort()

    await page.route("**/*", only_the_gateway)
    response = await page.goto(f"{busy_gateway.url}/debug/profile?seconds=60", wait_until="load")
    assert response is not None
    assert response.status == 200
    text = await page.evaluate("document.documentElement.textContent")
    assert BUSY in text
    assert await page.locator("svg rect").count() > 10
    shot = await page.screenshot(path=str(SCREENSHOT))
    assert requested == [f"{busy_gateway.url}/debug/profile?seconds=60"]
    assert outside == []

    # The screenshot is not blank: decoded in a blank page of the same browser, with nothing to fetch.
    blank = await browser.new_page()
    counts = await blank.evaluate(PIXELS, "data:image/png;base64," + base64.b64encode(shot).decode())
    # Mostly idle, a gateway's graph is a grey bar and a narrow warm column: thousands of pixels, not most.
    assert counts["painted"] > 0.01 * counts["total"], counts
    assert counts["warm"] > 2000, counts
    assert counts["colours"] > 20, counts
    await blank.close()
    await page.close()
