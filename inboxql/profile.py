"""`inboxql profile`: fetch a running process's flame graph (its sampler's last N seconds) and write it.

    inboxql profile [--seconds 60] [--url http://127.0.0.1:8000] [--format svg|collapsed|speedscope] [-o FILE]

`--url` is the gateway (the token in INBOXQL_TOKEN must be an operator's, unless asking from this machine without
one) or the sync process's operator port (`inboxql sync --metrics-port N`: loopback only). Only the HTTP client is
imported: the command runs beside a busy process and should cost it nothing but the request.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx

from ops.profile import PATH


def profile_url(base: str) -> str:
    """`base` (a process's address, with or without the path) -> the profile endpoint's URL."""
    base = base.rstrip("/")
    return base if base.endswith(PATH) else base + PATH


def _refusal(response: httpx.Response) -> str:
    try:
        return str(response.json()["errors"][0]["message"])
    except (ValueError, KeyError, IndexError, TypeError):
        return response.text[:200] or response.reason_phrase


def fetch(url: str, seconds: float, fmt: str, output: str | None, token: str | None = None) -> int:
    """Write the profile to `output` (standard output when None or "-"); a process exit code."""
    token = token if token is not None else os.environ.get("INBOXQL_TOKEN") or None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    target = profile_url(url)
    try:
        response = httpx.get(target, params={"seconds": f"{seconds:g}", "format": fmt}, headers=headers, timeout=60)
    except httpx.HTTPError as exc:
        print(f"inboxql: cannot reach {target}: {exc}", file=sys.stderr)
        return 1
    if response.status_code != 200:
        print(f"inboxql: {target} answered {response.status_code}: {_refusal(response)}", file=sys.stderr)
        return 1
    if output is None or output == "-":
        sys.stdout.buffer.write(response.content)
        sys.stdout.buffer.flush()
    else:
        Path(output).write_bytes(response.content)
    samples = response.headers.get("x-profile-samples", "?")
    covered = response.headers.get("x-profile-seconds", "?")
    print(
        f"{samples} samples over {covered} s{'' if output in (None, '-') else f' written to {output}'}", file=sys.stderr
    )
    return 0
