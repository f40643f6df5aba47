"""Debian packages the tests run private instances of (scripts/setup installs them; this is for a test run
started without it)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def ensure_installed(binary: str, package: str) -> None:
    """Install Debian's `package` when `binary` is missing (as root; otherwise say how)."""
    if Path(binary).exists():
        return
    if os.geteuid() != 0:
        raise RuntimeError(f"{package} is not installed: run scripts/setup, or `sudo apt-get install {package}`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", package], check=True, env=env)
