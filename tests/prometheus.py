"""A private Prometheus server for tests: Debian's `prometheus`, its own config and storage in a temp folder, its own
loopback port, killed at the end. The system's instance (if the package's scripts started one) is never touched.

It scrapes the targets it is given every second, so a test asks its HTTP API (`/api/v1/query`) for a figure the
way an operator's dashboard would, a second or two after the process changed it. Installed with apt-get when
missing (as root), like Dovecot (inboxql.devmail).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlencode
from urllib.request import urlopen

from inboxql.devmail import free_port
from tests.debian import ensure_installed
from tests.private import PrivateProcess

PROMETHEUS = "/usr/bin/prometheus"


class PrometheusError(RuntimeError):
    """The private server could not be installed or started, or its API answered with an error."""


def scrape_config(targets: Mapping[str, str], interval: str = "1s") -> str:
    """A Prometheus config scraping each `job: host:port` at `interval` (YAML is a superset of JSON)."""
    return json.dumps(
        {
            "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [target]}]} for job, target in targets.items()
            ],
        },
        indent=2,
    )


class PrometheusServer(PrivateProcess):
    host = "127.0.0.1"

    def __init__(self, root: Path, targets: Mapping[str, str]) -> None:
        self.root = root
        self.targets = dict(targets)
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        ensure_installed(PROMETHEUS, "prometheus")
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "prometheus.yml"
        config.write_text(scrape_config(self.targets))
        log = (self.root / "prometheus.log").open("wb")
        self._proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.root / 'data'}",
                f"--web.listen-address={self.host}:{self.port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise PrometheusError(f"prometheus exited: {(self.root / 'prometheus.log').read_text()[-2000:]}")
            try:
                with urlopen(f"{self.url}/-/ready", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise PrometheusError(f"prometheus was not ready within {timeout:.0f} s")

    def query(self, promql: str) -> list[dict[str, object]]:
        """The instant vector of a PromQL expression: [{"metric": {labels}, "value": [time, "text"]}, ...]."""
        with urlopen(f"{self.url}/api/v1/query?{urlencode({'query': promql})}", timeout=5) as answer:
            body = json.load(answer)
        if body.get("status") != "success":
            raise PrometheusError(f"{promql}: {body}")
        result: list[dict[str, object]] = body["data"]["result"]
        return result

    def value(self, promql: str) -> float | None:
        """The one value of a scalar-like query (a single series), or None while there is none."""
        found = self.query(promql)
        if not found:
            return None
        if len(found) > 1:
            raise PrometheusError(f"{promql}: {len(found)} series, expected one")
        sample = found[0]["value"]
        assert isinstance(sample, list)
        return float(sample[1])

    def health(self) -> dict[str, str]:
        """Each job's health as Prometheus last scraped it: "up", or "down: <the scrape's error>", or "unknown"."""
        with urlopen(f"{self.url}/api/v1/targets", timeout=5) as answer:
            body = json.load(answer)
        return {
            t["labels"]["job"]: t["health"] if t["health"] != "down" else f"down: {t.get('lastError', '')}"
            for t in body["data"]["activeTargets"]
        }
