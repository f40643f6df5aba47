"""A private HAProxy for tests: Debian's `haproxy`, its own config in a temp folder, its own loopback port, in the
foreground (`-db`), stopped at the end. The system's service (if the package's scripts started one) is never touched.

It balances HTTP, websockets and event streams over the gateways it is given, as an operator would put several
`inboxql gateway` processes behind one address:

* round robin over the servers, each checked with `GET /healthz` every `check_ms`: a dead gateway (its port
  refuses at once) is taken out after three failed checks, and a connection that it refuses meanwhile is tried
  on another server (`option redispatch 1`, `retries`). A check may take 5 s: a gateway busy handing an event
  to thousands of subscribers answers late, and marking it down would send every client it holds elsewhere at
  once (an earlier config with 300 ms checks and `on-marked-down shutdown-sessions` did exactly that to the
  survivors of a kill, one after the other);
* `timeout tunnel` (for an upgraded websocket) and `timeout server` (for an event stream, which sends a comment
  every 12 s) are long, so an idle subscriber is not cut by the balancer;
* a server marked down keeps the connections it holds: one that died closed them itself, and a client of a
  gateway that hangs learns it from its own keep-alive (graphql-transport-ws pings, SSE comments).

Installed with apt-get when missing (as root), like tests/prometheus.py.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from inboxql.devmail import free_port
from tests.debian import ensure_installed
from tests.private import PrivateProcess

HAPROXY = "/usr/sbin/haproxy"


class HAProxyError(RuntimeError):
    """The private balancer could not be installed, configured or started."""


def balancer_config(port: int, servers: Sequence[int], *, maxconn: int = 4096, check_ms: int = 1000) -> str:
    """An HAProxy config: a frontend on 127.0.0.1:`port` balancing over gateways on the loopback `servers`."""
    lines = [
        "global",
        f"    maxconn {maxconn}",
        "",
        "defaults",
        "    mode http",
        "    option redispatch 1",
        "    retries 3",
        "    timeout connect 1s",
        "    timeout client 1h",
        "    timeout server 1h",
        "    timeout tunnel 1h",
        "    timeout client-fin 1s",
        "    timeout server-fin 1s",
        "",
        "frontend gateways",
        f"    bind 127.0.0.1:{port}",
        f"    maxconn {maxconn}",
        "    default_backend gateways",
        "",
        "backend gateways",
        "    balance roundrobin",
        "    option httpchk GET /healthz",
        "    http-check expect status 200",
        "    timeout check 5s",
        f"    default-server inter {check_ms}ms fall 3 rise 2",
    ]
    lines += [f"    server gateway{i} 127.0.0.1:{server} check" for i, server in enumerate(servers)]
    return "\n".join(lines) + "\n"


class HAProxyServer(PrivateProcess):
    host = "127.0.0.1"

    def __init__(self, root: Path, servers: Sequence[int], *, maxconn: int = 4096) -> None:
        self.root = root
        self.servers = list(servers)
        self.maxconn = maxconn
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.root / "haproxy.log"

    def start(self, timeout: float = 15.0) -> None:
        ensure_installed(HAPROXY, "haproxy")
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "haproxy.cfg"
        config.write_text(balancer_config(self.port, self.servers, maxconn=self.maxconn))
        checked = subprocess.run([HAPROXY, "-c", "-q", "-f", str(config)], capture_output=True, text=True)
        if checked.returncode != 0:
            raise HAProxyError(f"haproxy refused its config: {checked.stderr or checked.stdout}")
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                [HAPROXY, "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise HAProxyError(f"haproxy exited: {self.log_path.read_text()[-2000:]}")
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise HAProxyError(f"haproxy was not listening within {timeout:.0f} s")
