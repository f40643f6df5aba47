"""`inboxql status` and the progress of `inboxql sync --once`, run as a user runs them: through a pipe (plain,
tab-separated lines) and on a pseudo-terminal (rich's table and progress bars)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import re
import subprocess
import time
from dataclasses import dataclass

from inboxql.devmail import DovecotServer
from inboxql.mailgen import generate
from schema import accounts, changelog
from schema.crypto import CredentialBox
from schema.unit import Store
from tests.conftest import new_user
from tests.sync.support import sync_once
from tests.test_cli import INBOXQL, assert_unguarded, cli_env, guard_dir, inboxql

__all__ = ["cli_env", "guard_dir"]  # fixtures used by the tests below

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    address: str
    user: str
    password: str


async def _account(store: Store, box: CredentialBox, dovecot: DovecotServer, messages: int, seed: int) -> Account:
    user, password = new_user(dovecot)
    if messages:
        dovecot.append(user, password, "INBOX", list(generate(messages, seed=seed)))
    address = f"{user}@example.test"
    endpoint = accounts.ImapEndpoint(dovecot.host, dovecot.port, "none", user)
    return Account(await accounts.create(store, box, address, endpoint, password), address, user, password)


def _on_a_terminal(env: dict[str, str], *args: str, timeout: float = 120) -> tuple[int, str]:
    """Run `inboxql ARGS` with stdout and stderr on a pseudo-terminal; its exit code and everything it wrote."""
    main, tty = pty.openpty()
    env = {**env, "TERM": "xterm-256color", "COLUMNS": "160", "LINES": "50"}
    proc = subprocess.Popen([str(INBOXQL), *args], stdin=subprocess.DEVNULL, stdout=tty, stderr=tty, env=env)
    os.close(tty)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: every writer closed its end
                break
            if not chunk:
                break
            out += chunk
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(main)
    return code, out.decode("utf-8", "replace")


async def test_status_piped_prints_one_tab_separated_line_per_account_and_folder(
    cli_env: dict[str, str], store: Store, credential_box: CredentialBox, dovecot: DovecotServer
) -> None:
    synced = await _account(store, credential_box, dovecot, 3, seed=1401)
    await sync_once(store, credential_box, synced.id)
    async with store.sessions() as s:
        head = await changelog.newest_seq(s, synced.id)

    done = await inboxql(cli_env, "status", "--folders")
    assert done.code == 0, done.stderr
    lines = done.stdout.splitlines()
    mine = [line.split("\t") for line in lines if line.split("\t")[0] == str(synced.id)]
    assert mine == [[str(synced.id), synced.address, "ready", "-", "3", "3", str(head), "0/0", "-", "-"]]
    folders = [line.split("\t") for line in lines if line.startswith(f"folder\t{synced.id}\t")]
    assert ["folder", str(synced.id), "INBOX", "follow", "3", "3", "-", "-"] in folders
    assert ANSI.search(done.stdout) is None
    assert synced.password not in done.stdout + done.stderr
    assert_unguarded(done)


async def test_status_shows_a_refused_login_with_its_error(
    cli_env: dict[str, str], store: Store, credential_box: CredentialBox, dovecot: DovecotServer
) -> None:
    refused = await _account(store, credential_box, dovecot, 0, seed=0)
    async with store.unit(refused.id) as uow:
        await accounts.set_state(uow, "auth_failed", "AuthenticationFailed: NO [AUTHENTICATIONFAILED] failed.")
    done = await inboxql(cli_env, "status")
    [fields] = [line.split("\t") for line in done.stdout.splitlines() if line.startswith(f"{refused.id}\t")]
    assert fields[2] == "auth_failed"
    assert fields[-1] == "AuthenticationFailed: NO [AUTHENTICATIONFAILED] failed."
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", fields[-2])


async def test_status_on_a_terminal_is_a_table(
    cli_env: dict[str, str], store: Store, credential_box: CredentialBox, dovecot: DovecotServer
) -> None:
    synced = await _account(store, credential_box, dovecot, 2, seed=1402)
    await sync_once(store, credential_box, synced.id)
    code, out = await asyncio.to_thread(_on_a_terminal, cli_env, "status")
    assert code == 0, out
    text = ANSI.sub("", out)
    assert "inboxql accounts" in text
    row = next(line for line in text.splitlines() if synced.address in line)
    assert "ready" in row
    assert "2 of 2" in row
    assert "│" in row  # a table's borders, not tab-separated fields
    assert "\t" not in text


async def test_sync_once_piped_prints_plain_progress_lines(
    cli_env: dict[str, str], store: Store, credential_box: CredentialBox, dovecot: DovecotServer
) -> None:
    account = await _account(store, credential_box, dovecot, 600, seed=1403)
    done = await inboxql(cli_env, "sync", "--once", "--account", str(account.id))
    assert done.code == 0, done.stderr
    assert ANSI.search(done.stdout) is None
    label = f"account {account.id} {account.address}"
    lines = done.stdout.splitlines()
    assert all(line.startswith(label) for line in lines), lines
    inbox = [line for line in lines if line.startswith(f"{label} INBOX: ")]
    assert re.fullmatch(rf"{re.escape(label)} INBOX: 600 of 600 messages \([\d,]+ msg/s over [\d.]+ s\)", inbox[-1])
    done_line = rf"{re.escape(label)}: 600 of 600 messages, ready \([\d,]+ msg/s over [\d.]+ s\)"
    assert [line for line in lines if re.fullmatch(done_line, line)], lines
    assert_unguarded(done)


async def test_sync_once_on_a_terminal_draws_progress_bars_with_counts_and_rate(
    cli_env: dict[str, str], store: Store, credential_box: CredentialBox, dovecot: DovecotServer
) -> None:
    account = await _account(store, credential_box, dovecot, 1000, seed=1404)
    code, out = await asyncio.to_thread(_on_a_terminal, cli_env, "sync", "--once", "--account", str(account.id))
    assert code == 0, out
    assert ANSI.search(out) is not None  # drawn, redrawn in place
    text = ANSI.sub("", out)
    assert "━" in text  # rich's bars
    final = text.splitlines()
    inbox = [line for line in final if "INBOX" in line and "1,000 of 1,000" in line]
    assert inbox, text[-2000:]
    assert re.search(r"[\d,]+ msg/s", inbox[-1]), inbox[-1]
    # Drawn while it ran, not only at the end: INBOX's bar was seen short of its total.
    counts = {int(n.replace(",", "")) for n in re.findall(r"INBOX\s.*?([\d,]+) of 1,000", text)}
    assert {n for n in counts if n < 1000}, counts
    assert any(account.address in line and "1,000 of 1,000" in line for line in final)
    # Log lines go above the bars, not through them (rich's handler on the same terminal).
    with contextlib.suppress(StopIteration):
        logged = next(line for line in final if "INFO" in line)
        assert "━" not in logged
