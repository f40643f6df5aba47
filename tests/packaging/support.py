"""What the packaging tests share: a clean copy of the source, free ports, processes that always end, HTTP checks.

The packaging tests build what users install (the wheel, the .deb, the container image) from the source as git
sees it, install it where the checkout cannot leak in (another directory, another user, a chroot), and check that
the installed gateway serves GraphiQL from its own files.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from gateway.graphiql import ASSETS, STATIC_URL

REPO = Path(__file__).resolve().parent.parent.parent
CONSTRAINTS = REPO / "constraints.txt"


def needs_root() -> str | None:
    """Why a test that installs system packages cannot run here (None: it can)."""
    return None if os.geteuid() == 0 else "needs root (apt-get, dpkg, chroot)"


def export_source(destination: Path) -> Path:
    """The files git knows or would add (tracked, or new and not ignored), copied to `destination`: no .venv,
    no GraphiQL files vended earlier, no build/ left by another build."""
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    destination.mkdir(parents=True, exist_ok=True)
    archive = destination.with_suffix(".tar")
    with tarfile.open(archive, "w") as tar:
        for raw in filter(None, listed):
            name = raw.decode()
            if (REPO / name).exists():  # a deleted, still tracked file is not part of the tree
                tar.add(REPO / name, arcname=name, recursive=False)
    with tarfile.open(archive) as tar:
        tar.extractall(destination, filter="tar")
    archive.unlink()
    return destination


@dataclass
class Started:
    """A process started in a session of its own, so that it and its children can be ended together."""

    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        # Children left in the group (a MIME worker whose parent died) go too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def started(
    argv: Sequence[str], log: Path, *, env: Mapping[str, str] | None = None, cwd: Path | str | None = None
) -> Iterator[Started]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            list(argv), stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )
    running = Started(proc, log)
    try:
        yield running
    finally:
        running.stop()


def wait_for_http(url: str, process: Started, timeout: float = 60.0) -> None:
    """Until `url` answers 200; fails with the process's output when it exits first or never answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.proc.poll() is not None:
            raise AssertionError(f"exited with {process.proc.returncode} before {url} answered:\n{process.output()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        time.sleep(0.25)
    raise AssertionError(f"{url} did not answer within {timeout:.0f} s:\n{process.output()}")


def assert_serves_graphiql(base: str, expected: Mapping[str, bytes] | None = None) -> None:
    """The gateway at `base` serves its GraphiQL page, and every file the page loads from its own static route
    (byte for byte `expected[name]` when given), with no address of another host in the page."""
    page = httpx.get(f"{base}/graphql", headers={"accept": "text/html"}, timeout=10.0)
    assert page.status_code == 200, page.text[:500]
    assert "<title>inboxql GraphiQL</title>" in page.text
    loaded = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert loaded, page.text[:500]
    assert all(url.startswith(f"{STATIC_URL}/") for url in loaded), loaded  # nothing from a CDN
    for name in ASSETS:
        assert f"{STATIC_URL}/{name}" in page.text
        asset = httpx.get(f"{base}{STATIC_URL}/{name}", timeout=10.0)
        assert asset.status_code == 200, name
        assert len(asset.content) > 500, name
        if expected is not None:
            assert asset.content == expected[name], name


def run(
    argv: Sequence[str],
    *,
    timeout: float = 600,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """`argv` to its end; a failure shows its output."""
    done = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd, input=stdin, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited with {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done
