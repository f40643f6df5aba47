"""The `inboxql` console script, run as a user runs it: a subprocess with the configuration in its environment.

Every run carries a guard (a sitecustomize on PYTHONPATH) that refuses socket connections to non-loopback
addresses and says so on stderr, so no test can send traffic off this machine, and a test can tell whether
the command tried.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from unittest.mock import ANY
from urllib.parse import unquote

import aiosmtplib
import httpx
import pytest
from sqlalchemy import func, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from inboxql.devmail import DovecotServer, free_port
from inboxql.devsmtp import PostfixServer
from schema import accounts, tokens
from schema.crypto import CredentialBox, Purpose
from schema.db import create_engine, drop_database, session_factory
from schema.models import Account, ApiToken, Base
from schema.settings import Settings
from schema.unit import Store
from synccore.imap import ImapClient
from tests.conftest import fresh_database_url, new_user

INBOXQL = Path(sys.executable).with_name("inboxql")
# The checkout under test: first on the console script's path, since the virtualenv's editable install may point at
# another checkout of the project (a worktree's tests would otherwise run the main checkout's code).
CHECKOUT = Path(__file__).resolve().parent.parent
GUARD_MARKER = "inboxql-test-guard: blocked a connection to"
GUARD = f'''
import errno
import ipaddress
import socket
import sys

_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex


def _loopback(address):
    if not isinstance(address, tuple) or not address:
        return True  # a unix socket
    host = address[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _refuse(address):
    sys.stderr.write("{GUARD_MARKER} %r\\n" % (address,))
    sys.stderr.flush()
    return OSError(errno.ENETUNREACH, "the test guard refused a non-loopback connection")


def connect(self, address):
    if not _loopback(address):
        raise _refuse(address)
    return _connect(self, address)


def connect_ex(self, address):
    if not _loopback(address):
        _refuse(address)
        return errno.ENETUNREACH
    return _connect_ex(self, address)


socket.socket.connect = connect
socket.socket.connect_ex = connect_ex
'''


@dataclass(frozen=True, slots=True)
class Done:
    code: int
    stdout: str
    stderr: str
    seconds: float


@pytest.fixture(scope="module")
def guard_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli-guard")
    (folder / "sitecustomize.py").write_text(GUARD)
    # The guard must really be loaded by the console script's interpreter, or it guards nothing.
    interpreter = INBOXQL.read_text().splitlines()[0].removeprefix("#!").split()
    probe = subprocess.run(
        [*interpreter, "-c", "import socket; print(socket.socket.connect.__module__)"],
        env={**os.environ, "PYTHONPATH": str(folder)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "sitecustomize"
    return folder


@pytest.fixture
def cli_env(settings: Settings, guard_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INBOXQL_")}
    env.update(
        INBOXQL_DATABASE_URL=settings.database_url,
        INBOXQL_SECRET_KEY=settings.secret_key,
        INBOXQL_REDIS_URL=settings.redis_url,
        PYTHONPATH=os.pathsep.join([str(guard_dir), str(CHECKOUT), *filter(None, [env.get("PYTHONPATH")])]),
    )
    return env


async def inboxql(env: dict[str, str], *args: str, stdin: str = "", timeout: float = 120) -> Done:
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        str(INBOXQL),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Done(proc.returncode, out.decode(), err.decode(), time.monotonic() - started)


async def accounts_of(engine: AsyncEngine, username: str) -> Sequence[Account]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(Account).where(Account.imap_username == username))
        return [Account(**row._asdict()) for row in rows]


def assert_unguarded(done: Done) -> None:
    assert GUARD_MARKER not in done.stderr, done.stderr


# --- account add ------------------------------------------------------------------------------------


async def test_account_add_prints_only_the_new_id_and_stores_the_password_sealed(
    cli_env: dict[str, str],
    engine: AsyncEngine,
    credential_box: CredentialBox,
    dovecot: DovecotServer,
    mail_user: tuple[str, str],
) -> None:
    user, password = mail_user
    done = await inboxql(
        cli_env, "account", "add", "--imap-url", f"imap://{user}@127.0.0.1:{dovecot.port}", "--password-stdin",
        stdin=password + "\n",
    )  # fmt: skip
    assert done.code == 0, done.stderr
    assert re.fullmatch(r"\d+\n", done.stdout), repr(done.stdout)
    account_id = int(done.stdout)
    stored = await accounts_of(engine, user)
    assert [a.id for a in stored] == [account_id]
    account = stored[0]
    assert (account.imap_host, account.imap_port, account.imap_security) == ("127.0.0.1", dovecot.port, "none")
    assert account.imap_password is not None
    assert account.imap_password != password.encode()
    assert password.encode() not in account.imap_password
    assert credential_box.open(account.imap_password, Purpose.ACCOUNT) == password
    assert password not in done.stderr
    assert_unguarded(done)


async def test_account_add_with_a_wrong_password_fails_clearly_and_stores_nothing(
    cli_env: dict[str, str], engine: AsyncEngine, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    user, password = mail_user
    wrong = password + "-wrong"
    done = await inboxql(
        cli_env, "account", "add", "--imap-url", f"imap://{user}@127.0.0.1:{dovecot.port}", "--password-stdin",
        stdin=wrong + "\n",
    )  # fmt: skip
    assert done.code != 0
    assert done.stdout == ""
    assert "refused the login" in done.stderr
    assert "nothing was stored" in done.stderr
    assert wrong not in done.stderr
    assert await accounts_of(engine, user) == []


async def test_account_add_checks_the_smtp_login_too(
    cli_env: dict[str, str], engine: AsyncEngine, dovecot: DovecotServer, postfix: PostfixServer
) -> None:
    """The submission server is asked too (Postfix, SASL through the Dovecot's auth): a send would fail later."""
    user, password = new_user(dovecot)
    imap = f"imap://{user}@127.0.0.1:{dovecot.port}"
    ca = ["--tls-ca-file", str(dovecot.ca_file)]
    closed = free_port()
    unreachable = await inboxql(
        cli_env, "account", "add", "--imap-url", imap, "--password-stdin",
        "--smtp-url", f"smtp://127.0.0.1:{closed}", *ca, stdin=password + "\n",
    )  # fmt: skip
    assert unreachable.code == 1
    assert f"cannot reach 127.0.0.1:{closed}" in unreachable.stderr
    assert "nothing was stored" in unreachable.stderr
    refused = await inboxql(
        cli_env, "account", "add", "--imap-url", imap, "--password-stdin",
        "--smtp-url", f"smtp://someone-else@127.0.0.1:{postfix.port}", *ca, stdin=password + "\n",
    )  # fmt: skip
    assert refused.code == 1
    assert "refused the login of 'someone-else'" in refused.stderr
    assert password not in refused.stderr
    assert await accounts_of(engine, user) == []
    added = await inboxql(
        cli_env, "account", "add", "--imap-url", imap, "--password-stdin",
        "--smtp-url", f"smtp://127.0.0.1:{postfix.port}", *ca, stdin=password + "\n",
    )  # fmt: skip
    assert added.code == 0, added.stderr
    assert [a.smtp_port for a in await accounts_of(engine, user)] == [postfix.port]


async def test_imaps_without_the_servers_ca_fails_verification_and_stores_nothing(
    cli_env: dict[str, str], engine: AsyncEngine, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    user, password = mail_user
    done = await inboxql(
        cli_env, "account", "add", "--imap-url", f"imaps://{user}@127.0.0.1:{dovecot.tls_port}", "--password-stdin",
        stdin=password + "\n",
    )  # fmt: skip
    assert done.code != 0
    assert done.stdout == ""
    assert "certificate" in done.stderr.lower()
    assert "nothing was stored" in done.stderr
    assert await accounts_of(engine, user) == []


async def test_imaps_with_the_servers_ca_file_works(
    cli_env: dict[str, str], engine: AsyncEngine, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    user, password = mail_user
    done = await inboxql(
        cli_env, "account", "add", "--imap-url", f"imaps://{user}@127.0.0.1:{dovecot.tls_port}", "--password-stdin",
        "--tls-ca-file", str(dovecot.ca_file),
        stdin=password + "\n",
    )  # fmt: skip
    assert done.code == 0, done.stderr
    assert re.fullmatch(r"\d+\n", done.stdout), repr(done.stdout)
    [account] = await accounts_of(engine, user)
    assert account.id == int(done.stdout)
    assert (account.imap_port, account.imap_security, account.tls_ca_file) == (
        dovecot.tls_port,
        "tls",
        str(dovecot.ca_file),
    )


async def test_plaintext_login_to_a_non_loopback_host_is_refused_before_connecting(
    cli_env: dict[str, str], engine: AsyncEngine
) -> None:
    # 192.0.2.10 is TEST-NET-1 (RFC 5737): never routed. The guard would report (and block) any attempt.
    done = await inboxql(
        cli_env, "account", "add", "--imap-url", "imap://nobody-cli@192.0.2.10:143", "--password-stdin",
        stdin="not-a-real-password\n", timeout=30,
    )  # fmt: skip
    assert_unguarded(done)
    assert done.code == 2, done.stderr
    assert done.stdout == ""
    assert "TLS" in done.stderr or "--allow-insecure" in done.stderr
    assert "--allow-insecure" in done.stderr
    assert done.seconds < 15
    assert await accounts_of(engine, "nobody-cli") == []


async def test_a_password_in_the_url_is_refused(
    cli_env: dict[str, str], engine: AsyncEngine, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    user, password = mail_user
    done = await inboxql(
        cli_env, "account", "add", "--imap-url", f"imap://{user}:{password}@127.0.0.1:{dovecot.port}",
        "--password-stdin", stdin=password + "\n",
    )  # fmt: skip
    assert done.code == 2
    assert done.stdout == ""
    assert "password" in done.stderr
    assert password not in done.stderr
    assert await accounts_of(engine, user) == []
    assert_unguarded(done)


# --- db upgrade -------------------------------------------------------------------------------------


@pytest.fixture
async def missing_database_url() -> AsyncIterator[str]:
    url = fresh_database_url("inboxql_cli")
    try:
        yield url
    finally:
        await drop_database(url)


async def _tables_and_version(url: str) -> tuple[set[str], str | None]:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
            version = await conn.scalar(text("SELECT version_num FROM alembic_version"))
            return tables, version
    finally:
        await engine.dispose()


async def _database_exists(url: str) -> bool:
    from sqlalchemy import make_url

    name = make_url(url).database
    server = create_engine(make_url(url).set(database="").render_as_string(hide_password=False), pool_size=1)
    try:
        async with server.connect() as conn:
            found = await conn.scalar(
                text("SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = :n"), {"n": name}
            )
            return bool(found)
    finally:
        await server.dispose()


async def test_db_upgrade_creates_a_missing_database_and_is_idempotent(
    cli_env: dict[str, str], missing_database_url: str
) -> None:
    env = {**cli_env, "INBOXQL_DATABASE_URL": missing_database_url}
    assert not await _database_exists(missing_database_url)

    first = await inboxql(env, "db", "upgrade")
    assert first.code == 0, first.stderr
    assert first.stdout == ""
    assert "created the database" in first.stderr
    tables, version = await _tables_and_version(missing_database_url)
    assert set(Base.metadata.tables) <= tables
    assert version is not None

    second = await inboxql(env, "db", "upgrade")
    assert second.code == 0, second.stderr
    assert "created the database" not in second.stderr
    assert await _tables_and_version(missing_database_url) == (tables, version)


# --- token create -----------------------------------------------------------------------------------


async def _grant_of(engine: AsyncEngine, token: str) -> tokens.Grant | None:
    async with session_factory(engine)() as session:
        return await tokens.lookup(session, token)


async def _token_count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(ApiToken)) or 0)


async def test_token_create_prints_only_a_token_and_admin_only_with_admin(
    cli_env: dict[str, str], engine: AsyncEngine, credential_box: CredentialBox
) -> None:
    endpoint = accounts.ImapEndpoint("127.0.0.1", 143, "none", "cli-token")
    account = await accounts.create(Store(engine), credential_box, "cli-token@example.test", endpoint, "pw")

    plain = await inboxql(cli_env, "token", "create", "--account", str(account))
    admin = await inboxql(cli_env, "token", "create", "--account", str(account), "--admin")

    for done in (plain, admin):
        assert done.code == 0, done.stderr
        assert re.fullmatch(rf"{tokens.PREFIX}[A-Za-z0-9_-]{{43}}\n", done.stdout), repr(done.stdout)
        assert_unguarded(done)
    assert await _grant_of(engine, plain.stdout.strip()) == tokens.Grant(
        token_id=ANY, account_ids=frozenset({account}), admin=False
    )
    assert await _grant_of(engine, admin.stdout.strip()) == tokens.Grant(
        token_id=ANY, account_ids=frozenset({account}), admin=True
    )
    read_only = await inboxql(cli_env, "token", "create", "--account", str(account), "--read-only")
    assert read_only.code == 0, read_only.stderr
    assert await _grant_of(engine, read_only.stdout.strip()) == tokens.Grant(
        token_id=ANY, account_ids=frozenset({account}), admin=False, read_only=True
    )


async def test_token_create_for_an_unknown_account_fails_and_creates_nothing(
    cli_env: dict[str, str], engine: AsyncEngine
) -> None:
    before = await _token_count(engine)
    done = await inboxql(cli_env, "token", "create", "--account", "987654321", "--admin")
    assert done.code == 1
    assert done.stdout == ""
    assert "no such account: 987654321" in done.stderr
    assert "no token was created" in done.stderr
    assert await _token_count(engine) == before


# --- sync and verify --------------------------------------------------------------------------------


async def test_verify_of_a_synced_empty_account_says_identical_and_exits_zero(
    cli_env: dict[str, str], dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    user, password = mail_user
    added = await inboxql(
        cli_env, "account", "add", "--imap-url", f"imap://{user}@127.0.0.1:{dovecot.port}", "--password-stdin",
        stdin=password + "\n",
    )  # fmt: skip
    assert added.code == 0, added.stderr
    account_id = added.stdout.strip()

    synced = await inboxql(cli_env, "sync", "--once", "--account", account_id)
    assert synced.code == 0, synced.stderr

    verified = await inboxql(cli_env, "verify", account_id)
    assert verified.code == 0, verified.stderr
    assert verified.stdout == "identical\n"
    assert_unguarded(verified)


async def test_verify_lists_each_difference_on_stdout_and_exits_one(
    cli_env: dict[str, str], dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    """After another client changed the mailbox behind the mirror's back (tests/sync/test_verify.py has every
    kind of difference)."""
    user, password = mail_user
    token = secrets.token_hex(6)
    raws = [f"Message-ID: <cli-{token}-{n}@example.test>\r\nSubject: {n}\r\n\r\nbody {n}\r\n".encode() for n in (1, 2)]
    dovecot.append(user, password, "INBOX", raws)
    added = await inboxql(
        cli_env, "account", "add", "--imap-url", f"imap://{user}@127.0.0.1:{dovecot.port}", "--password-stdin",
        stdin=password + "\n",
    )  # fmt: skip
    assert added.code == 0, added.stderr
    account_id = added.stdout.strip()
    synced = await inboxql(cli_env, "sync", "--once", "--account", account_id)
    assert synced.code == 0, synced.stderr

    other = ImapClient(timeout=30)
    await other.connect(dovecot.host, dovecot.port, security="none")
    try:
        await other.login(user, password)
        await other.create("Later")
        await other.select("INBOX")
        await other.uid_store([2], "add", ["\\Flagged"])
    finally:
        await other.logout()

    verified = await inboxql(cli_env, "verify", account_id)
    assert verified.code == 1, verified.stderr
    assert verified.stdout.splitlines() == [
        "folder 'Later': on the server, not in the mirror",
        "folder 'INBOX': UID 2 flags '\\\\Flagged' on the server, '' in the mirror",
        "2 differences",
    ]
    assert_unguarded(verified)


async def test_verify_of_an_unknown_account_fails_on_stderr(cli_env: dict[str, str]) -> None:
    done = await inboxql(cli_env, "verify", "987654321")
    assert done.code == 2
    assert done.stdout == ""
    assert "account 987654321 does not exist" in done.stderr


async def test_an_aiomysql_url_is_refused_with_a_message_naming_asyncmy(cli_env: dict[str, str]) -> None:
    env = {**cli_env, "INBOXQL_DATABASE_URL": "mysql+aiomysql://root@127.0.0.1:3306/inboxql"}
    done = await inboxql(env, "db", "upgrade")
    assert done.code == 2
    assert "mysql+asyncmy://" in done.stderr
    assert "Traceback" not in done.stderr


async def test_gateway_help_names_the_endpoint_and_defaults(cli_env: dict[str, str]) -> None:
    done = await inboxql(cli_env, "gateway", "--help")
    assert done.code == 0
    text = " ".join(done.stdout.split())  # argparse wraps to the terminal's width
    assert "/graphql" in text
    assert "default: 8000" in text
    assert "default: 127.0.0.1" in text


# --- demo -------------------------------------------------------------------------------------------


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _process_group(pgid: int) -> list[int]:
    """Live processes of the group (zombies left to init are not running)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError):
            text = stat.read_text()
            state, _, group = text[text.rindex(")") + 2 :].split()[:3]
            if int(group) == pgid and state != "Z":
                found.append(int(stat.parent.name))
    return found


@pytest.mark.parametrize("stop", ["SIGTERM", "Ctrl-C"])
async def test_the_demo_shows_new_mail_and_stops_its_servers_when_told(
    cli_env: dict[str, str], missing_database_url: str, tmp_path: Path, stop: str
) -> None:
    """SIGTERM (docker stop, systemd, timeout) and Ctrl-C (SIGINT to the terminal's whole process group, the MIME
    workers included) end `inboxql demo` cleanly, with no traceback, and its Dovecot and Postfix with it."""
    from inboxql.devmail import free_port

    env = {**cli_env, "INBOXQL_DATABASE_URL": missing_database_url}
    demo_dir = tmp_path / "demo"
    port = free_port()
    postfix_group = 0
    proc = await asyncio.create_subprocess_exec(
        str(INBOXQL),
        "demo",
        "--dir",
        str(demo_dir),
        "--port",
        str(port),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        start_new_session=True,  # a group of its own, as a terminal's foreground job has
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    try:
        printed: list[str] = []
        async with asyncio.timeout(180):
            while b"serving GraphQL" not in (line := await proc.stdout.readline()):
                assert line, (await proc.stderr.read()).decode()[-3000:]
                printed.append(line.decode())
            async with httpx.AsyncClient() as http:
                while True:
                    with contextlib.suppress(httpx.HTTPError):
                        if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                            break
                    await asyncio.sleep(0.1)
        # The GraphiQL link carries the token in its fragment only, which browsers never send to the server.
        [graphiql] = [p for p in printed if p.startswith("GraphiQL: ")]
        sent, _, fragment = graphiql.partition("#")
        assert "iqt_" not in sent
        assert "headers" not in sent
        assert "Bearer iqt_" in unquote(fragment)
        # So does the status page's link, with an operator token.
        [status_page] = [p for p in printed if p.startswith("Status page: ")]
        assert re.fullmatch(rf"Status page: http://127\.0\.0\.1:{port}/status#token=iqt_\S+\n", status_page)
        assert _processes_mentioning(str(demo_dir)) != []  # its Dovecot runs
        # Its Postfix runs (as root): the master and its daemons, one process group, mention no folder.
        master_pid = int((demo_dir / "postfix" / "queue" / "pid" / "master.pid").read_text().split()[0])
        postfix_group = os.getpgid(master_pid)
        assert _process_group(postfix_group) != []
        # New mail shows up as a line of its own: submitted through the demo's Postfix, mirrored from its Dovecot.
        ports = json.loads((demo_dir / "ports.json").read_text())
        tls = ssl.create_default_context(cafile=str(demo_dir / "dovecot" / "tls" / "cert.pem"))
        subject = f"hello {secrets.token_hex(4)}"
        async with aiosmtplib.SMTP(
            hostname="127.0.0.1", port=ports["submission"], start_tls=True, tls_context=tls
        ) as smtp:
            await smtp.login("demo", "demo-password")
            await smtp.sendmail(
                "demo@inboxql.test",
                ["demo@inboxql.test"],
                f"From: demo@inboxql.test\r\nTo: demo@inboxql.test\r\nSubject: {subject}\r\n\r\nhi\r\n".encode(),
            )
        async with asyncio.timeout(60):
            while subject.encode() not in (line := await proc.stdout.readline()):
                assert line, (await proc.stderr.read()).decode()[-3000:]
        assert line.startswith(b"New message ")
        assert b"from demo@inboxql.test" in line
        if stop == "SIGTERM":
            proc.terminate()
        else:
            os.killpg(proc.pid, signal.SIGINT)
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        left = _processes_mentioning(str(demo_dir)) + (_process_group(postfix_group) if postfix_group else [])
        for pid in left:  # a failed run must not leave its Dovecot behind for the rest of the suite
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    assert left == []
    assert proc.returncode == 0, err.decode()[-3000:]
    assert "Traceback" not in err.decode()
    assert out.decode().splitlines()[-1] == "Stopped."
