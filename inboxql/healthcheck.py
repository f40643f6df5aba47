"""The container image's HEALTHCHECK: `python3 -m inboxql.healthcheck` (exit 0 healthy, 1 not).

One image runs either process, so the check looks at what the container's first process is. The gateway is
healthy when its /healthz answers on the port it listens on (INBOXQL_GATEWAY_PORT, or --port). The sync process
serves no HTTP by default: it is healthy while it runs (it exits when it cannot go on, and the container's
restart policy starts it again); when it serves metrics (--metrics-port N, or INBOXQL_METRICS_PORT), that
endpoint must answer.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

TIMEOUT = 4.0


def _option(argv: Sequence[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def url_to_check(argv: Sequence[str], env: dict[str, str]) -> str | None:
    """The URL that must answer for a process started with `argv` (None: nothing to ask)."""
    if "gateway" in argv:
        port = _option(argv, "--port") or env.get("INBOXQL_GATEWAY_PORT", "8000")
        return f"http://127.0.0.1:{port}/healthz"
    metrics = _option(argv, "--metrics-port") or env.get("INBOXQL_METRICS_PORT")
    if "sync" in argv and metrics:
        return f"http://127.0.0.1:{metrics}/metrics"
    return None


def main() -> int:
    try:
        argv = Path("/proc/1/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        argv = []
    url = url_to_check(argv, dict(os.environ))
    if url is None:
        return 0
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:  # noqa: S310 (a loopback http URL)
            status = int(response.status)
    except (OSError, urllib.error.URLError) as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
