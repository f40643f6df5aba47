"""Settings of one inboxql process, read from the environment once and passed down."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from schema import keyring
from schema.crypto import KeyRing

DEFAULT_DATABASE_URL = "mysql+asyncmy://root@127.0.0.1:3306/inboxql?charset=utf8mb4"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def _config_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "inboxql"


def _key_required(env: Mapping[str, str]) -> bool:
    """INBOXQL_SECRET_KEY_REQUIRED=1: the key must be given, never made here. The container image sets it: a key
    made inside a container is lost with the container, and every stored password with it."""
    return env.get("INBOXQL_SECRET_KEY_REQUIRED", "").strip().lower() in ("1", "yes", "true")


def missing_key_message(path: Path) -> str:
    return (
        f"no secret key: set INBOXQL_SECRET_KEY, or provide the key ring file {path} (INBOXQL_SECRET_KEY_FILE). "
        "INBOXQL_SECRET_KEY_REQUIRED is set (as in the container image), so none is made here: a key made inside "
        "a container is lost with the container, and the stored passwords with it. Make one once and keep it, "
        "e.g. `python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > secret.key`, then mount it "
        f"(`docker run -v $PWD/secret.key:{path}:ro ...`) or pass it (`-e INBOXQL_SECRET_KEY=...`)"
    )


def _key_file(env: Mapping[str, str]) -> Path:
    """The key ring file (schema.keyring): INBOXQL_SECRET_KEY_FILE, or a per-machine 0600 file, created on first
    use, so the defaults work without configuration."""
    named = env.get("INBOXQL_SECRET_KEY_FILE")
    return Path(named) if named else _config_dir(env) / "secret.key"


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


MAX_SHARD = 31  # schema.shards: ids stay below 2**53


def parse_shards(text: str, home_url: str) -> tuple[tuple[int, str], ...]:
    """INBOXQL_SHARDS: the shards besides shard 0 (INBOXQL_DATABASE_URL), as NUMBER=URL entries separated by
    spaces or commas (a comma inside a URL is written %2C), e.g. `1=mysql+asyncmy://root@db1:3306/inboxql
    2=mysql+asyncmy://root@db2:3306/inboxql`. Numbers run from 1 to 31; each URL names its own database."""
    found: dict[int, str] = {}
    for entry in text.replace(",", " ").split():
        number, sep, url = entry.partition("=")
        if not sep or not number.strip().isdigit():
            raise SettingsError(f"INBOXQL_SHARDS: {entry[:40]!r} is not NUMBER=URL (e.g. 1=mysql+asyncmy://...)")
        shard = int(number)
        if not 1 <= shard <= MAX_SHARD:
            raise SettingsError(
                f"INBOXQL_SHARDS: shard {shard} is not within 1..{MAX_SHARD} (shard 0 is INBOXQL_DATABASE_URL)"
            )
        if shard in found:
            raise SettingsError(f"INBOXQL_SHARDS: shard {shard} is listed twice")
        try:
            check_database_url(url)
        except SettingsError as exc:
            raise SettingsError(f"INBOXQL_SHARDS: shard {shard}: {exc}") from None
        if url in (home_url, *found.values()):
            raise SettingsError(f"INBOXQL_SHARDS: shard {shard} names a database already listed")
        found[shard] = url
    return tuple(sorted(found.items()))


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = DEFAULT_REDIS_URL
    # The master key in use (INBOXQL_SECRET_KEY, or the newest key of the ring file).
    secret_key: str = ""
    # The key ring file, when the keys come from one (then `inboxql secret rotate` can add a key to it).
    secret_key_file: str | None = None
    # The shards besides shard 0 (database_url), by number (INBOXQL_SHARDS; schema.shards): none by default.
    shards: tuple[tuple[int, str], ...] = ()

    def shard_urls(self) -> dict[int, str]:
        """Every shard's database URL, shard 0 (database_url) first."""
        return {0: self.database_url, **dict(self.shards)}

    def key_ring(self) -> KeyRing:
        """The keys credentials are sealed and opened with: the ring file's (read again when it changes), or
        INBOXQL_SECRET_KEY alone."""
        if self.secret_key_file is not None:
            return KeyRing.load(Path(self.secret_key_file))
        return KeyRing.single(self.secret_key)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        database_url = check_database_url(env.get("INBOXQL_DATABASE_URL", DEFAULT_DATABASE_URL))
        redis_url = env.get("INBOXQL_REDIS_URL", DEFAULT_REDIS_URL)
        shards = parse_shards(env.get("INBOXQL_SHARDS", ""), database_url)
        if env.get("INBOXQL_SECRET_KEY"):
            return cls(database_url, redis_url, env["INBOXQL_SECRET_KEY"], shards=shards)
        path = _key_file(env)
        if _key_required(env) and not path.exists():
            raise SettingsError(missing_key_message(path))
        try:
            keys = keyring.ensure(path)
        except (OSError, keyring.KeyRingError) as exc:
            raise SettingsError(f"the key ring {path} cannot be used: {exc}") from None
        newest = max(keys, key=lambda k: k.id)
        return cls(database_url, redis_url, newest.secret, str(path), shards)
