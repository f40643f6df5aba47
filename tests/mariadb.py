"""A private MariaDB server for tests that stop and restart it: its own datadir in a temp folder, its own loopback
port, no config file read (``--no-defaults``). The shared server other tests use is never touched.

Debian's ``mariadb-install-db`` prepares the datadir (root without a password on loopback, as on the shared
server); ``mariadbd`` serves it. Starting takes about a second, installing about three.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from inboxql.devmail import free_port, port_open

MARIADBD = "/usr/sbin/mariadbd"
INSTALL_DB = "/usr/bin/mariadb-install-db"


class MariaDBError(RuntimeError):
    """The private server could not be installed or started."""


class PrivateMariaDB:
    host = "127.0.0.1"

    def __init__(self, root: Path, port: int | None = None, options: Sequence[str] = ()) -> None:
        self.root = root
        self.port = port or free_port()
        self.options = tuple(options)  # more mariadbd options, e.g. "--innodb-ft-min-token-size=2"
        self.datadir = root / "data"
        self._proc: subprocess.Popen[bytes] | None = None

    def url(self, database: str) -> str:
        return f"mysql+asyncmy://root@{self.host}:{self.port}/{database}?charset=utf8mb4"

    def _user(self) -> list[str]:
        # mariadbd refuses to run as root unless told to; the datadir is ours either way.
        return ["--user=root"] if os.geteuid() == 0 else []

    def install(self) -> None:
        done = subprocess.run(
            [
                INSTALL_DB,
                "--no-defaults",
                f"--datadir={self.datadir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                *self._user(),
            ],
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            raise MariaDBError(f"mariadb-install-db failed: {done.stderr.decode(errors='replace')[-2000:]}")

    def start(self, timeout: float = 60.0) -> None:
        if not self.datadir.exists():
            self.install()
        self._proc = subprocess.Popen(
            [
                MARIADBD,
                "--no-defaults",
                f"--datadir={self.datadir}",
                f"--port={self.port}",
                f"--bind-address={self.host}",
                f"--socket={self.root / 'mariadbd.sock'}",
                f"--pid-file={self.root / 'mariadbd.pid'}",
                f"--log-error={self.root / 'error.log'}",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=64M",
                "--max-connections=200",
                *self.options,
                *self._user(),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise MariaDBError(f"mariadbd exited at start: {self._tail()}")
            if port_open(self.host, self.port):
                return
            time.sleep(0.05)
        self.stop()
        raise MariaDBError(f"mariadbd did not open port {self.port} in {timeout} s: {self._tail()}")

    def stop(self, timeout: float = 60.0) -> None:
        """A clean shutdown (SIGTERM), as a service restart does; waits until the port is closed."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def _tail(self, lines: int = 20) -> str:
        log = self.root / "error.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""
