"""The Debian package, built by scripts/build-deb and installed with apt-get, runs both services as its units
say and serves GraphiQL from its own files; purged, it leaves neither files nor processes.

systemd cannot run here, so each unit's ExecStart is run the way systemd would: as its User and Group, with the
variables of its EnvironmentFile (the installed /etc/inboxql/inboxql.env, pointed at the test MariaDB, Redis and a
free port), from /. The installed sync process mirrors a Dovecot mailbox, and the installed gateway answers a
GraphQL query for it.
"""

from __future__ import annotations

import asyncio
import configparser
import grp
import os
import pwd
import re
import shlex
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from gateway.ids import to_global
from inboxql.devmail import DovecotServer, free_port
from schema.db import drop_database
from tests.conftest import REDIS_URL, fresh_database_url, new_user
from tests.packaging.support import REPO, assert_serves_graphiql, needs_root, run, started, wait_for_http

pytestmark = [
    pytest.mark.packaging,
    pytest.mark.slow,
    pytest.mark.skipif(needs_root() is not None, reason=str(needs_root())),
]

ENV_FILE = Path("/etc/inboxql/inboxql.env")
UNITS = Path("/lib/systemd/system")
VENV = Path("/opt/venvs/inboxql")
STATE = Path("/var/lib/inboxql")
# Another apt-get (a helper's setup) may hold the lock for a while: wait for it instead of failing.
APT = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "-y", "-q"]
APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


def _installed() -> bool:
    status = subprocess.run(["dpkg-query", "-W", "-f=${Status}", "inboxql"], capture_output=True, text=True)
    return status.returncode == 0 and "installed" in status.stdout.split()


def _purge() -> None:
    if _installed() or subprocess.run(["dpkg", "-s", "inboxql"], capture_output=True).returncode == 0:
        run([*APT, "purge", "inboxql"], env=APT_ENV)


@pytest.fixture
def purged_afterwards() -> Iterator[None]:
    """The package is purged at the end whatever happened (and before, if a failed run left it installed)."""
    _purge()
    try:
        yield
    finally:
        _purge()


def env_file(path: Path) -> dict[str, str]:
    """systemd's EnvironmentFile: VARIABLE=value lines; blank lines and comments skipped."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";")) and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value
    return values


def configure(settings: dict[str, str]) -> None:
    """Set variables in the installed env file, as an operator edits it (commented-out lines replaced)."""
    text = ENV_FILE.read_text()
    for key, value in settings.items():
        line = f"{key}={value}"
        text, count = re.subn(rf"^#?{key}=.*$", line, text, flags=re.MULTILINE)
        if count == 0:
            text += line + "\n"
    ENV_FILE.write_text(text)


def unit_command(name: str) -> tuple[list[str], dict[str, str], str, str]:
    """The unit's ExecStart (split as systemd does, ${VAR} expanded from its environment), its environment, its
    User and its Group."""
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(UNITS / name)
    service = unit["Service"]
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    env.update(env_file(Path(service["EnvironmentFile"].lstrip("-"))))
    user, group = service["User"], service["Group"]
    home = pwd.getpwnam(user).pw_dir
    env.update(HOME=home, USER=user, LOGNAME=user)
    argv = [
        re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), word) for word in shlex.split(service["ExecStart"])
    ]
    return argv, env, user, group


def as_unit_user(argv: list[str], user: str, group: str) -> list[str]:
    return ["setpriv", f"--reuid={user}", f"--regid={group}", "--init-groups", "--", *argv]


def _message(subject: str, address: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Sender <sender@example.test>"
    msg["To"] = address
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{subject.replace(' ', '.')}@example.test>"
    msg.set_content(f"{subject}: body\n")
    return bytes(msg)


def test_the_deb_installs_runs_both_services_as_its_units_say_and_purges_clean(
    tmp_path: Path, dovecot: DovecotServer, purged_afterwards: None
) -> None:
    began = time.monotonic()
    run(["bash", str(REPO / "scripts" / "build-deb"), str(tmp_path / "dist")], timeout=900)
    [deb] = (tmp_path / "dist").glob("inboxql_*.deb")
    built = time.monotonic()

    # Installed unconfigured: nothing migrated, and it says what to do.
    first = run([*APT, "install", f"./{deb.name}"], env=APT_ENV, cwd=deb.parent)
    assert "no database configured yet" in first.stdout, first.stdout
    inboxql_uid, inboxql_gid = pwd.getpwnam("inboxql").pw_uid, grp.getgrnam("inboxql").gr_gid
    config = ENV_FILE.stat()
    assert (config.st_uid, config.st_gid, stat.S_IMODE(config.st_mode)) == (0, inboxql_gid, 0o640)
    ring = (STATE / "secret.key").stat()
    assert (ring.st_uid, stat.S_IMODE(ring.st_mode)) == (inboxql_uid, 0o600)
    # The installed venv holds GraphiQL's files (no npm on the path at run time).
    graphiql = VENV / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    assert len(list(graphiql.glob("site-packages/gateway/static/graphiql/*.js"))) >= 5
    installed = time.monotonic()

    # Configured, then installed again (as an upgrade would): postinst migrates the database.
    database_url = fresh_database_url("inboxql_deb")
    port = free_port()
    configure(
        {
            "INBOXQL_DATABASE_URL": database_url,
            "INBOXQL_REDIS_URL": REDIS_URL,
            "INBOXQL_GATEWAY_PORT": str(port),
        }
    )
    try:
        again = run(
            [*APT, "-o", "Dpkg::Options::=--force-confold", "install", "--reinstall", f"./{deb.name}"],
            env=APT_ENV,
            cwd=deb.parent,
        )
        assert "migrating the database" in again.stdout, again.stdout
        assert "newest revision" in again.stdout + again.stderr
        assert env_file(ENV_FILE)["INBOXQL_DATABASE_URL"] == database_url  # the operator's edit is kept

        # An account and a token, with the installed command (as root it runs as inboxql, with the env file).
        user, password = new_user(dovecot)
        subjects = [f"Packaged note {i}" for i in range(3)]
        dovecot.append(user, password, "INBOX", [_message(s, f"{user}@example.test") for s in subjects])
        added = run(
            [
                "/usr/bin/inboxql",
                "account",
                "add",
                "--imap-url",
                f"imap://{user}@127.0.0.1:{dovecot.port}",
                "--password-stdin",
            ],
            stdin=password + "\n",
        )
        account_id = int(added.stdout.strip())
        token = run(["/usr/bin/inboxql", "token", "create", "--account", str(account_id)]).stdout.strip()

        sync_argv, sync_env, sync_user, sync_group = unit_command("inboxql-sync.service")
        gw_argv, gw_env, gw_user, gw_group = unit_command("inboxql-gateway.service")
        assert sync_argv[0] == gw_argv[0] == str(VENV / "bin" / "inboxql")
        assert (sync_user, gw_user) == ("inboxql", "inboxql")
        with (
            started(
                as_unit_user(sync_argv, sync_user, sync_group), tmp_path / "sync.log", env=sync_env, cwd="/"
            ) as sync,
            started(as_unit_user(gw_argv, gw_user, gw_group), tmp_path / "gateway.log", env=gw_env, cwd="/") as gw,
        ):
            base = f"http://127.0.0.1:{port}"
            wait_for_http(f"{base}/healthz", gw)
            # The processes run as the unit's user.
            for process in (sync, gw):
                assert os.stat(f"/proc/{process.proc.pid}").st_uid == inboxql_uid
            # The installed sync mirrors the mailbox; the installed gateway answers for it.
            query = "query($a: ID!) { messages(accountId: $a, first: 10) { nodes { subject } } }"
            variables = {"a": to_global("Account", account_id)}
            seen: list[str] = []
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and sorted(seen) != subjects:
                assert sync.proc.poll() is None, sync.output()
                answer = httpx.post(
                    f"{base}/graphql",
                    json={"query": query, "variables": variables},
                    headers={"authorization": f"Bearer {token}"},
                    timeout=10,
                )
                assert answer.status_code == 200, answer.text
                seen = [n["subject"] for n in answer.json()["data"]["messages"]["nodes"]]
                time.sleep(0.5)
            assert sorted(seen) == subjects, sync.output()
            assert_serves_graphiql(base)
            ran = time.monotonic()
    finally:
        asyncio.run(drop_database(database_url))

    # Purged: no files, no process of the inboxql user (the user itself stays, as Debian leaves system users).
    run([*APT, "purge", "inboxql"], env=APT_ENV)
    for gone in (VENV, ENV_FILE.parent, STATE, UNITS / "inboxql-sync.service", Path("/usr/bin/inboxql")):
        assert not gone.exists(), gone
    # A unit's last process may still be exiting as apt returns: the user's processes are gone within seconds.
    deadline = time.monotonic() + 15
    while (
        subprocess.run(["pgrep", "-u", "inboxql"], capture_output=True).returncode == 0 and time.monotonic() < deadline
    ):
        time.sleep(0.2)
    assert subprocess.run(["pgrep", "-u", "inboxql"], capture_output=True).returncode == 1
    assert shutil.which("inboxql", path="/usr/bin") is None
    print(
        f"\ndeb: build {built - began:.1f} s, install {installed - built:.1f} s, configure, sync and serve "
        f"{ran - installed:.1f} s, purge {time.monotonic() - ran:.1f} s",
        file=sys.stderr,
    )
