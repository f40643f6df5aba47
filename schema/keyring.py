"""The key ring file: the master keys credentials are sealed with (schema.crypto), newest last in use.

```
# inboxql key ring: one key a line, "ID SECRET". The highest ID seals; every key listed opens.
2 Zm9vYmFy...
1 YmFyYmF6...
```

A file holding one bare line (what inboxql wrote before key rotation) is read as key 1.

Writers never leave a half-written file where a reader looks: a new file is written under a temporary name and
linked into place (`os.link` fails when the file exists, so of several processes starting at once exactly one
creates it and the others read that one); a rotation writes a temporary file and renames it over the old one,
under an exclusive lock so that two rotations cannot both add "the next id" with different secrets.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

HEADER = '# inboxql key ring: one key a line, "ID SECRET". The highest ID seals; every key listed opens.\n'


class KeyRingError(ValueError):
    """The key ring file cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Key:
    id: int
    secret: str

    def __repr__(self) -> str:  # never show the secret
        return f"Key({self.id})"


def parse(text: str) -> list[Key]:
    keys: list[Key] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        head, _, secret = line.partition(" ")
        if not secret:
            head, secret = "1", head  # the single bare key of a file written before rotation existed
        if not head.isdigit() or int(head) < 1 or not secret.strip():
            raise KeyRingError(f"line {number} of the key ring is not 'ID SECRET'")
        keys.append(Key(int(head), secret.strip()))
    ids = [k.id for k in keys]
    if len(set(ids)) != len(ids):
        raise KeyRingError("the key ring names a key id twice")
    return keys


def render(keys: Sequence[Key]) -> str:
    return HEADER + "".join(f"{k.id} {k.secret}\n" for k in sorted(keys, key=lambda k: -k.id))


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def _write_new(path: Path, text: str) -> Path:
    """`text` in a new 0600 file next to `path`, flushed to disk; returns the file's name."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    return temporary


def read(path: Path, *, settle_seconds: float = 2.0) -> list[Key]:
    """The keys of an existing ring file. An empty file is a writer (an older inboxql: create, then write)
    caught between its two steps: it is read again until it has a key, for at most `settle_seconds`."""
    deadline = time.monotonic() + settle_seconds
    while True:
        keys = parse(path.read_text())
        if keys:
            return keys
        if time.monotonic() >= deadline:
            raise KeyRingError(f"the key ring {path} holds no key")
        time.sleep(0.02)


def ensure(path: Path) -> list[Key]:
    """The keys of the ring at `path`, created with one new key when it does not exist. Safe when several
    processes start at once: exactly one file is created and every process reads the same keys."""
    try:
        return read(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = _write_new(path, render([Key(1, new_secret())]))
    try:
        os.link(temporary, path)  # atomic, and never over an existing file: the first process wins
    except FileExistsError:
        pass  # another process created it first: use its keys, not ours
    finally:
        temporary.unlink()
    return read(path)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    lock = path.with_name(path.name + ".lock")
    fd = os.open(lock, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def add_key(path: Path) -> list[Key]:
    """Add a new key (the next id) to the ring: it seals from now on, the older ones still open. Returns the
    new ring."""
    with _locked(path):
        keys = read(path)
        keys.append(Key(max(k.id for k in keys) + 1, new_secret()))
        _replace(path, keys)
    return keys


def keep_only(path: Path, key_id: int) -> list[Key]:
    """Drop every key but `key_id` from the ring (once nothing is sealed under them any more)."""
    with _locked(path):
        keys = [k for k in read(path) if k.id == key_id]
        if not keys:
            raise KeyRingError(f"the key ring holds no key {key_id}")
        _replace(path, keys)
    return keys


def _replace(path: Path, keys: Sequence[Key]) -> None:
    temporary = _write_new(path, render(keys))
    os.replace(temporary, path)


__all__ = ["Key", "KeyRingError", "add_key", "ensure", "keep_only", "parse", "read", "render"]
