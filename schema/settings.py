"""Settings of one inboxql process, read from the environment once and passed down."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATABASE_URL = "mysql+asyncmy://root@127.0.0.1:3306/inboxql?charset=utf8mb4"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def _config_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "inboxql"


def _default_secret_key(env: Mapping[str, str]) -> str:
    """A per-machine key kept in a 0600 file, so the defaults work without configuration."""
    path = _config_dir(env) / "secret.key"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key + "\n")
    return key


class SettingsError(ValueError):
    """A setting cannot be used; the message says which and what to write instead."""


# The drivers inboxql runs on (the URL's `mysql+DRIVER://`). aiomysql is not one: it breaks on PyMySQL 1.2, and
# asyncmy spent a quarter less CPU on an initial sync (BENCHMARKS.md).
_DRIVERS = {"asyncmy"}


def check_database_url(url: str) -> str:
    scheme = url.split("://", 1)[0] if "://" in url else ""
    dialect, _, driver = scheme.partition("+")
    if dialect not in ("mysql", "mariadb") or driver not in _DRIVERS:
        raise SettingsError(
            f"INBOXQL_DATABASE_URL must be a mysql+asyncmy:// URL (MySQL or MariaDB through the asyncmy driver), "
            f"not {scheme or url!r}://...; e.g. {DEFAULT_DATABASE_URL}"
        )
    return url


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = DEFAULT_REDIS_URL
    secret_key: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            database_url=check_database_url(env.get("INBOXQL_DATABASE_URL", DEFAULT_DATABASE_URL)),
            redis_url=env.get("INBOXQL_REDIS_URL", DEFAULT_REDIS_URL),
            secret_key=env.get("INBOXQL_SECRET_KEY") or _default_secret_key(env),
        )
