"""Real mail to test the parser on, fetched at test time and cached, never committed.

Two sources, about 360 messages together:

* CPython's own email test messages (`Lib/test/test_email/data/msg_*.txt`): koi8-r, iso-8859-x,
  broken multiparts, delivery reports. Read from the running interpreter's stdlib when it ships
  them (pyenv's builds do), else from Debian's `libpython3.X-testsuite` package.
* The notmuch test corpora (`test/corpora/` in Debian's `notmuch` source package): LKML threads,
  PGP/MIME, protected headers, duplicates, broken MIME. GPL-3+ test data, which is why it is only
  ever fetched into the cache.

Debian packages are fetched with a private apt configuration under the cache directory (its own
sources.list, lists and archives), naming the same release and mirror as the machine's own apt
sources, so nothing under /etc/apt changes. The cache is `$INBOXQL_CACHE_DIR`, else
`~/.cache/inboxql/corpus`; once filled, loading the corpus is offline.
"""

from __future__ import annotations

import email
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

__all__ = ["CorpusUnavailable", "cache_dir", "corpus_messages", "split_mbox"]

_SYSTEM_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
_DONE = ".complete"


class CorpusUnavailable(RuntimeError):
    """The corpus is neither cached nor fetchable; the message says what to do."""


def cache_dir() -> Path:
    configured = os.environ.get("INBOXQL_CACHE_DIR")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "inboxql" / "corpus"


@cache
def corpus_messages() -> list[tuple[str, bytes]]:
    """Every corpus message as (name, raw bytes), in a stable order."""
    root = cache_dir()
    messages: list[tuple[str, bytes]] = []
    for path in sorted(_cpython_data(root).glob("msg_*.txt")):
        messages.extend(_messages_in(f"cpython/{path.name}", path.read_bytes()))
    corpora = _notmuch_corpora(root)
    for path in sorted(p for p in corpora.rglob("*") if p.is_file()):
        name = f"notmuch/{path.relative_to(corpora).as_posix()}"
        data = path.read_bytes()
        if _looks_like_mail(data):
            messages.extend(_messages_in(name, data))
    return messages


# --- splitting files into messages ----------------------------------------------------------------

_ENVELOPE = re.compile(rb"From \S+ +\S")
_HEADER_LINE = re.compile(rb"[!-9;-~]+[ \t]*:")
_BOUNDARY = re.compile(rb"""boundary\s*=\s*(?:"([^"]+)"|([^\s;]+))""", re.I)


def _looks_like_mail(data: bytes) -> bool:
    first = data.split(b"\n", 1)[0]
    return bool(_ENVELOPE.match(first) or _HEADER_LINE.match(first))


def _messages_in(name: str, data: bytes) -> Iterator[tuple[str, bytes]]:
    if not _ENVELOPE.match(data):
        yield name, data
        return
    messages = split_mbox(data)
    if len(messages) == 1:
        yield name, messages[0]
        return
    for index, message in enumerate(messages, 1):
        yield f"{name}#{index}", message


def split_mbox(data: bytes) -> list[bytes]:
    """Split an mbox (mboxo/mboxrd) into messages, without their envelope lines.

    A "From " line after a blank line starts a new message, except inside a multipart body whose
    closing boundary has not been seen yet: attached patches (git format-patch output) start with
    exactly such a line, and writers that do not escape them are common.
    """
    messages: list[bytes] = []
    current: list[bytes] = []
    in_headers = True
    header_block: list[bytes] = []
    open_boundary: bytes | None = None
    previous_blank = True
    for line in data.splitlines(keepends=True):
        if line.startswith(b"From ") and previous_blank and open_boundary is None:
            if current:
                messages.append(b"".join(current))
            current, header_block, in_headers = [], [], True
            previous_blank = False
            continue
        current.append(line)
        stripped = line.rstrip(b"\r\n")
        if in_headers:
            if stripped:
                header_block.append(stripped)
            else:
                in_headers = False
                found = _BOUNDARY.search(b" ".join(header_block))
                if found and re.search(rb"(?im)^content-type:\s*multipart/", b"\n".join(header_block)):
                    open_boundary = found.group(1) or found.group(2)
        elif open_boundary is not None and stripped.rstrip() == b"--" + open_boundary + b"--":
            open_boundary = None
        previous_blank = not stripped
    if current:
        messages.append(b"".join(current))
    return messages


# --- CPython's test messages ----------------------------------------------------------------------


def _cpython_data(root: Path) -> Path:
    shipped = Path(email.__file__).parent.parent / "test" / "test_email" / "data"
    if any(shipped.glob("msg_*.txt")):
        return shipped
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    target = root / f"cpython-{version}"
    if not (target / _DONE).exists():
        package = f"libpython{version}-testsuite"
        with _fresh_dir(target) as work:
            apt = _PrivateApt(root / "apt")
            deb = apt.download(package, work)
            extracted = work / "deb"
            _run(["dpkg-deb", "-x", str(deb), str(extracted)], f"unpacking {deb.name}")
            found = sorted(extracted.rglob("test_email/data/msg_*.txt"))
            if not found:
                raise CorpusUnavailable(f"{package} holds no test_email/data/msg_*.txt")
            for path in found:
                shutil.copyfile(path, work / path.name)
            shutil.rmtree(extracted)
            deb.unlink()
            apt.clean()
    return target


# --- notmuch's test corpora -----------------------------------------------------------------------


def _notmuch_corpora(root: Path) -> Path:
    target = root / "notmuch"
    if not (target / _DONE).exists():
        with _fresh_dir(target) as work:
            apt = _PrivateApt(root / "apt")
            downloads = work / "download"
            downloads.mkdir()
            apt.source("notmuch", downloads)
            tarballs = sorted(downloads.glob("notmuch_*.orig.tar.*"))
            if not tarballs:
                raise CorpusUnavailable("apt-get source notmuch brought no orig tarball")
            count = _extract_corpora(tarballs[0], work / "corpora")
            if count < 250:
                raise CorpusUnavailable(f"{tarballs[0].name} holds only {count} corpus files")
            shutil.rmtree(downloads)
            apt.clean()
    return target / "corpora"


def _extract_corpora(tarball: Path, destination: Path) -> int:
    """Copy the regular files under */test/corpora/ out of the tarball; returns their count."""
    count = 0
    with tarfile.open(tarball, "r:*") as archive:
        for member in archive:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) < 4 or parts[1:3] != ["test", "corpora"]:
                continue
            relative = [part for part in parts[3:] if part not in ("", ".", "..")]
            source = archive.extractfile(member)
            if not relative or source is None:
                continue
            path = destination.joinpath(*relative)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(source.read())
            count += 1
    return count


# --- fetching from Debian without touching /etc/apt -----------------------------------------------


@dataclass(frozen=True)
class _Source:
    uri: str
    suite: str
    signed_by: str | None


class _PrivateApt:
    """apt-get with its own sources.list, lists and archives, all under `home`."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._updated = False

    def _options(self) -> list[str]:
        home = self.home
        return [
            "-o", f"Dir::Etc::SourceList={home / 'sources.list'}",
            "-o", f"Dir::Etc::SourceParts={home / 'sources.list.d'}",
            "-o", f"Dir::State::Lists={home / 'lists'}",
            "-o", f"Dir::Cache={home / 'cache'}",
            "-o", "Dir::Cache::pkgcache=",
            "-o", "Dir::Cache::srcpkgcache=",
            "-o", "APT::Sandbox::User=root" if os.geteuid() == 0 else "Debug::NoLocking=1",
            "-q",
        ]  # fmt: skip

    def _update(self) -> None:
        if self._updated:
            return
        source = _debian_source()
        signed = f" [signed-by={source.signed_by}]" if source.signed_by else ""
        for sub in ("sources.list.d", "lists/partial", "cache/archives/partial"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        (self.home / "sources.list").write_text(
            f"deb{signed} {source.uri} {source.suite} main\ndeb-src{signed} {source.uri} {source.suite} main\n"
        )
        _run(["apt-get", *self._options(), "update"], "apt-get update (private lists)")
        self._updated = True

    def clean(self) -> None:
        """Drop the package lists (tens of MB): the corpus is extracted, they are not needed."""
        shutil.rmtree(self.home, ignore_errors=True)
        self._updated = False

    def source(self, package: str, into: Path) -> None:
        self._update()
        _run(
            ["apt-get", *self._options(), "source", "--download-only", package],
            f"apt-get source --download-only {package}",
            cwd=into,
        )

    def download(self, package: str, into: Path) -> Path:
        self._update()
        _run(["apt-get", *self._options(), "download", package], f"apt-get download {package}", into)
        debs = sorted(into.glob(f"{package}_*.deb"))
        if not debs:
            raise CorpusUnavailable(f"apt-get download {package} brought no .deb")
        return debs[0]


def _debian_source() -> _Source:
    """The first Debian 'deb' source of the machine (the release's main suite, not -updates)."""
    entries: list[_Source] = []
    listed, parts = _SYSTEM_SOURCES
    files = [listed] + (sorted(parts.iterdir()) if parts.is_dir() else [])
    for path in files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        if path.suffix == ".sources":
            entries.extend(_deb822_entries(text))
        elif path.suffix == ".list" or path == listed:
            entries.extend(_one_line_entries(text))
    for entry in entries:
        if "-" not in entry.suite and "/" not in entry.suite:
            return entry
    raise CorpusUnavailable(
        "no Debian 'deb' source found in /etc/apt/sources.list or /etc/apt/sources.list.d/*.sources;"
        " the notmuch corpus needs one to fetch `apt-get source notmuch` from"
    )


def _one_line_entries(text: str) -> Iterator[_Source]:
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        options = re.search(r"\[([^\]]*)\]", line)
        signed = re.search(r"signed-by=(\S+)", options.group(1)) if options else None
        words = re.sub(r"\[[^\]]*\]", " ", line).split()
        if len(words) >= 3 and words[0] == "deb" and "debian" in words[1]:
            yield _Source(words[1], words[2], signed.group(1) if signed else None)


def _deb822_entries(text: str) -> Iterator[_Source]:
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.strip()
        if fields.get("enabled", "yes").lower() == "no" or "deb" not in fields.get("types", ""):
            continue
        signed = fields.get("signed-by")
        signed = signed if signed and signed.startswith("/") else None
        for uri in fields.get("uris", "").split():
            if "debian" in uri:
                for suite in fields.get("suites", "").split():
                    yield _Source(uri, suite, signed)


# --- plumbing -------------------------------------------------------------------------------------


class _fresh_dir:
    """Build `target` in a temporary sibling and rename it into place when the block succeeds."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.work = target

    def __enter__(self) -> Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix=f".{self.target.name}-", dir=self.target.parent))
        return self.work

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is not None:
            shutil.rmtree(self.work, ignore_errors=True)
            return
        (self.work / _DONE).touch()
        shutil.rmtree(self.target, ignore_errors=True)
        try:
            self.work.rename(self.target)
        except OSError:  # another process won the race: its copy is as good as ours
            shutil.rmtree(self.work, ignore_errors=True)


def _run(command: list[str], what: str, cwd: Path | None = None) -> None:
    if shutil.which(command[0]) is None:
        raise CorpusUnavailable(f"{what}: {command[0]} is not installed (Debian tools are needed)")
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired as error:
        raise CorpusUnavailable(f"{what}: timed out after {error.timeout} s") from error
    if done.returncode != 0:
        raise CorpusUnavailable(f"{what} failed (exit {done.returncode}):\n{done.stderr.strip()[-2000:]}")
