"""The GraphQL-over-HTTP audits of npm's graphql-http (serverAudits) against the running gateway.

Node and the pinned audit package come from tests/gateway/node (package.json and package-lock.json):
`npm ci` there installs them, and this test runs it when node_modules is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gateway.testing import ServerThread, World

NODE_DIR = Path(__file__).parent / "node"


@pytest.fixture(scope="module")
def audit_tool() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("the GraphQL-over-HTTP audit needs Node.js and npm (Debian: apt-get install nodejs npm)")
    if not (NODE_DIR / "node_modules" / "graphql-http").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, timeout=300)
    return NODE_DIR / "audit.mjs"


def run_audit(script: Path, url: str, token: str | None) -> list[dict[str, Any]]:
    env = {**os.environ, "INBOXQL_TOKEN": token or ""}
    done = subprocess.run(
        ["node", str(script), url], cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=120, check=True
    )
    results: list[dict[str, Any]] = json.loads(done.stdout)
    return results


@pytest.mark.parametrize("with_token", [True, False], ids=["token", "anonymous"])
def test_graphql_over_http_audit_passes_without_errors_or_warnings(
    audit_tool: Path, gateway: ServerThread, world: World, with_token: bool
) -> None:
    results = run_audit(audit_tool, f"{gateway.url}/graphql", world.token_alice if with_token else None)
    assert len(results) >= 50
    print({s: sum(r["status"] == s for r in results) for s in ("ok", "notice", "warn", "error")})
    problems = [r for r in results if r["status"] in ("error", "warn")]
    assert problems == []
