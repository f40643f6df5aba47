"""`inboxql account list | set-password | remove` and `inboxql token list | revoke`, run as a user runs them
(subprocesses, real MariaDB, real Dovecot), and the sync process letting go of a removed account."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
from collections.abc import AsyncIterator, Awaitable, Callable

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from inboxql.devmail import DovecotServer
from schema import tokens, webhooks
from schema.crypto import CredentialBox, Purpose
from schema.db import session_factory
from schema.models import (
    Account,
    Action,
    ApiToken,
    Base,
    ChangeLog,
    Message,
    MimeBlob,
    MutationKey,
    Outbox,
    utcnow,
)
from tests.conftest import new_user
from tests.test_cli import INBOXQL, Done, assert_unguarded, cli_env, guard_dir, inboxql

__all__ = ["cli_env", "guard_dir"]  # fixtures used by the tests below


def mail(subject: str) -> bytes:
    return (
        f"From: Carol <carol@example.test>\r\nTo: someone@example.test\r\nSubject: {subject}\r\n"
        f"Message-ID: <{secrets.token_hex(8)}@example.test>\r\nDate: Sun, 06 Dec 2026 08:00:00 +0000\r\n\r\n"
        f"The body of {subject}.\r\n"
    ).encode()


async def add_account(env: dict[str, str], dovecot: DovecotServer, user: str, password: str) -> int:
    done = await inboxql(
        env, "account", "add", "--imap-url", f"imap://{user}@127.0.0.1:{dovecot.port}", "--password-stdin",
        stdin=password + "\n",
    )  # fmt: skip
    assert done.code == 0, done.stderr
    return int(done.stdout)


async def synced_account(env: dict[str, str], dovecot: DovecotServer, messages: int = 3) -> tuple[int, str, str]:
    user, password = new_user(dovecot)
    dovecot.append(user, password, "INBOX", [mail(f"note {i}") for i in range(messages)])
    account_id = await add_account(env, dovecot, user, password)
    synced = await inboxql(env, "sync", "--once", "--account", str(account_id))
    assert synced.code == 0, synced.stderr
    return account_id, user, password


async def row_of(engine: AsyncEngine, account_id: int) -> Account | None:
    async with session_factory(engine)() as s:
        return await s.get(Account, account_id)


async def message_ids(engine: AsyncEngine, account_id: int) -> list[int]:
    async with engine.connect() as conn:
        return list(await conn.scalars(select(Message.id).where(Message.account_id == account_id).order_by(Message.id)))


# --- account list -----------------------------------------------------------------------------------


async def test_account_list_shows_login_server_sync_state_and_last_error_and_no_password(
    cli_env: dict[str, str], engine: AsyncEngine, dovecot: DovecotServer
) -> None:
    user, password = new_user(dovecot)
    account_id = await add_account(cli_env, dovecot, user, password)
    async with session_factory(engine)() as s, s.begin():
        await s.execute(
            update(Account)
            .where(Account.id == account_id)
            .values(sync_state="auth_failed", sync_error="LOGIN failed:\nNO [AUTHENTICATIONFAILED] nope")
        )
    done = await inboxql(cli_env, "account", "list")
    assert done.code == 0, done.stderr
    lines = {line.split("\t")[0]: line.split("\t") for line in done.stdout.splitlines()}
    assert lines[str(account_id)] == [
        str(account_id),
        f"{user}@127.0.0.1",
        user,
        f"127.0.0.1:{dovecot.port} (none)",
        "auth_failed",
        "LOGIN failed: NO [AUTHENTICATIONFAILED] nope",
    ]
    assert password not in done.stdout + done.stderr
    assert_unguarded(done)


# --- account set-password ---------------------------------------------------------------------------


async def test_set_password_checks_the_login_first_then_clears_auth_failed_and_keeps_every_id(
    cli_env: dict[str, str], engine: AsyncEngine, dovecot: DovecotServer, credential_box: CredentialBox
) -> None:
    account_id, user, _ = await synced_account(cli_env, dovecot)
    before = await message_ids(engine, account_id)
    assert len(before) == 3
    dovecot.set_password(user, "changed-on-the-server")
    refused = await inboxql(cli_env, "sync", "--once", "--account", str(account_id))
    assert refused.code != 0
    stale = await row_of(engine, account_id)
    assert stale is not None
    assert stale.sync_state == "auth_failed"

    wrong = await inboxql(cli_env, "account", "set-password", str(account_id), stdin="not-the-password\n")
    assert wrong.code == 1
    assert "refused the login" in wrong.stderr
    assert "nothing was changed" in wrong.stderr
    assert "not-the-password" not in wrong.stderr + wrong.stdout
    unchanged = await row_of(engine, account_id)
    assert unchanged is not None
    assert (unchanged.sync_state, unchanged.imap_password) == ("auth_failed", stale.imap_password)

    done = await inboxql(cli_env, "account", "set-password", str(account_id), stdin="changed-on-the-server\n")
    assert done.code == 0, done.stderr
    assert "changed-on-the-server" not in done.stdout + done.stderr
    fresh = await row_of(engine, account_id)
    assert fresh is not None
    assert (fresh.sync_state, fresh.sync_error) == ("pending", None)
    assert fresh.imap_password is not None
    assert credential_box.open(fresh.imap_password, Purpose.ACCOUNT) == "changed-on-the-server"

    dovecot.append(user, "changed-on-the-server", "INBOX", [mail("after the new password")])
    synced = await inboxql(cli_env, "sync", "--once", "--account", str(account_id))
    assert synced.code == 0, synced.stderr
    after = await message_ids(engine, account_id)
    assert after[:3] == before  # the same account, the same message ids
    assert len(after) == 4
    assert_unguarded(done)


async def test_set_password_of_an_unknown_account_fails_on_stderr(cli_env: dict[str, str]) -> None:
    done = await inboxql(cli_env, "account", "set-password", "987654321", stdin="whatever\n")
    assert (done.code, done.stdout) == (2, "")
    assert "account 987654321 does not exist" in done.stderr


# --- account remove ---------------------------------------------------------------------------------


async def _rows_of_account(engine: AsyncEngine, account_id: int) -> dict[str, int]:
    """How many rows every table with an account_id column holds for this account (new tables included)."""
    counts: dict[str, int] = {}
    async with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            column = table.c.get("account_id")
            if column is None:
                continue
            n = await conn.scalar(select(func.count()).select_from(table).where(column == account_id))
            if n:
                counts[table.name] = int(n)
        n = await conn.scalar(select(func.count()).where(Account.id == account_id))
        if n:
            counts["accounts"] = int(n)
    return counts


async def test_account_remove_deletes_its_mirror_change_log_pending_work_and_revokes_its_tokens(
    cli_env: dict[str, str], engine: AsyncEngine, dovecot: DovecotServer, credential_box: CredentialBox
) -> None:
    doomed, _, _ = await synced_account(cli_env, dovecot)
    kept, _, _ = await synced_account(cli_env, dovecot, messages=2)
    async with session_factory(engine)() as s, s.begin():
        only_doomed = await tokens.create_token(s, [doomed], admin=True)
        both = await tokens.create_token(s, [doomed, kept])
        only_kept = await tokens.create_token(s, [kept])
        grant = await tokens.lookup(s, both)
        assert grant is not None
        s.add(MutationKey(token_id=grant.token_id, key="k1", mutation="updateMessages", result={"subject": "x"}))
        await webhooks.create(s, credential_box, doomed, "https://example.com/hook", ["*"])
        s.add(Action(account_id=doomed, kind="flags", state="pending", payload={}))
        s.add(
            Outbox(
                account_id=doomed, message=b"x", sent_copy=b"x", envelope_from="a@example.test", recipients=[],
                message_id_header="<x@example.test>", send_at=utcnow(),
            )
        )  # fmt: skip
        blobs = list(await s.scalars(select(Message.blob_sha256).where(Message.account_id == doomed)))
    before = await _rows_of_account(engine, doomed)
    assert {"messages", "message_places", "folders", "threads", "change_log", "webhooks", "actions", "outbox"} <= set(
        before
    ), before
    kept_before = await _rows_of_account(engine, kept)

    refused = await inboxql(cli_env, "account", "remove", str(doomed))
    assert refused.code == 2
    assert "--yes" in refused.stderr
    assert await _rows_of_account(engine, doomed) == before

    done = await inboxql(cli_env, "account", "remove", str(doomed), "--yes")
    assert done.code == 0, done.stderr
    assert await _rows_of_account(engine, doomed) == {}
    async with session_factory(engine)() as s:
        assert await tokens.lookup(s, only_doomed) is None
        assert await tokens.lookup(s, both) is None
        assert await tokens.lookup(s, only_kept) is not None
        assert await s.scalar(select(func.count()).where(MimeBlob.sha256.in_(blobs))) == 0
        assert await s.scalar(select(func.count()).where(ChangeLog.account_id == doomed)) == 0
        assert await s.scalar(select(func.count()).where(MutationKey.token_id == grant.token_id)) == 0
        revoked = list(await s.scalars(select(ApiToken.id).where(ApiToken.revoked_at.is_not(None))))
    assert re.fullmatch(rf"account {doomed} removed; tokens revoked: [\d, ]+\n", done.stdout), done.stdout
    assert set(map(int, done.stdout.split(": ")[1].split(", "))) <= set(revoked)
    assert await _rows_of_account(engine, kept) == kept_before  # the other account is untouched

    again = await inboxql(cli_env, "account", "remove", str(doomed), "--yes")
    assert again.code == 2
    assert f"account {doomed} does not exist" in again.stderr


@contextlib.asynccontextmanager
async def running_sync(env: dict[str, str], *account_ids: int) -> AsyncIterator[asyncio.subprocess.Process]:
    args = [a for account_id in account_ids for a in ("--account", str(account_id))]
    proc = await asyncio.create_subprocess_exec(
        str(INBOXQL), "sync", "--poll-interval", "1", *args,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


async def read_until(proc: asyncio.subprocess.Process, pattern: str, seconds: float = 60) -> str:
    """Lines of the process's stderr up to the first that matches."""
    assert proc.stderr is not None
    seen: list[str] = []
    async with asyncio.timeout(seconds):
        while True:
            line = (await proc.stderr.readline()).decode()
            assert line, f"the process ended before {pattern!r}: {''.join(seen)}"
            seen.append(line)
            if re.search(pattern, line):
                return "".join(seen)


async def wait_for(condition: Callable[[], Awaitable[bool]], seconds: float = 60) -> None:
    async with asyncio.timeout(seconds):
        while not await condition():
            await asyncio.sleep(0.3)


async def test_the_sync_process_lets_go_of_a_removed_account_and_keeps_syncing_the_others(
    cli_env: dict[str, str], engine: AsyncEngine, dovecot: DovecotServer
) -> None:
    doomed, _, _ = await synced_account(cli_env, dovecot, messages=1)
    kept, user, password = await synced_account(cli_env, dovecot, messages=1)
    async with running_sync(cli_env, doomed, kept) as sync:
        await read_until(sync, rf"account {doomed}: syncing")
        removal = await inboxql(cli_env, "account", "remove", str(doomed), "--yes")
        assert removal.code == 0, removal.stderr
        # Let go within its rescan, not after the 30 s bound of the removal's wait.
        assert removal.seconds < 25
        assert "did not let go" not in removal.stderr
        await read_until(sync, rf"account {doomed}: removed, let go")
        assert await _rows_of_account(engine, doomed) == {}

        dovecot.append(user, password, "INBOX", [mail("still syncing")])

        async def arrived() -> bool:
            return len(await message_ids(engine, kept)) == 2

        await wait_for(arrived)
        assert sync.returncode is None


# --- token list and revoke --------------------------------------------------------------------------


async def test_token_list_shows_ids_names_scopes_and_accounts_and_never_a_secret(
    cli_env: dict[str, str], engine: AsyncEngine, dovecot: DovecotServer
) -> None:
    user, password = new_user(dovecot)
    account_id = await add_account(cli_env, dovecot, user, password)
    made: dict[str, Done] = {}
    for name, args in (
        ("reader", ["--account", str(account_id), "--read-only"]),
        ("hooks", ["--account", str(account_id), "--admin"]),
        ("onboarding", ["--operator"]),
    ):
        made[name] = await inboxql(cli_env, "token", "create", "--name", name, *args)
        assert made[name].code == 0, made[name].stderr
    secrets_made = [done.stdout.strip() for done in made.values()]

    done = await inboxql(cli_env, "token", "list")
    assert done.code == 0, done.stderr
    for secret in secrets_made:
        assert secret not in done.stdout
        assert secret[10:] not in done.stdout  # not even the part after the hint
    rows = {line.split("\t")[1]: line.split("\t") for line in done.stdout.splitlines()}
    assert rows["reader"][3:5] == ["read", f"accounts {account_id}"]
    assert rows["hooks"][3:5] == ["read+write+admin", f"accounts {account_id}"]
    assert rows["onboarding"][3:5] == ["operator", "no accounts"]
    assert rows["reader"][2] == secrets_made[0][:10] + "..."
    assert rows["reader"][5].startswith("created 20")
    assert rows["reader"][6] == "last used never"

    reader_id = rows["reader"][0]
    revoked = await inboxql(cli_env, "token", "revoke", reader_id)
    assert (revoked.code, revoked.stdout) == (0, f"revoked token {reader_id}\n")
    async with session_factory(engine)() as s:
        assert await tokens.lookup(s, secrets_made[0]) is None
        assert await tokens.lookup(s, secrets_made[1]) is not None
    listed = await inboxql(cli_env, "token", "list")
    assert "\treader\t" not in listed.stdout
    every = await inboxql(cli_env, "token", "list", "--all")
    assert re.search(rf"^{reader_id}\treader\t.*\trevoked 20", every.stdout, re.M), every.stdout

    twice = await inboxql(cli_env, "token", "revoke", reader_id, "987654321")
    assert twice.code == 1
    assert f"no live token {reader_id}, 987654321" in twice.stderr


async def test_an_operator_token_takes_no_accounts(cli_env: dict[str, str], dovecot: DovecotServer) -> None:
    user, password = new_user(dovecot)
    account_id = await add_account(cli_env, dovecot, user, password)
    done = await inboxql(cli_env, "token", "create", "--operator", "--account", str(account_id))
    assert done.code == 1
    assert "operator token grants no accounts" in done.stderr
    bare = await inboxql(cli_env, "token", "create")
    assert bare.code == 2
    assert "--operator" in bare.stderr


async def test_a_running_sync_takes_up_an_auth_failed_account_again_after_set_password(
    cli_env: dict[str, str], engine: AsyncEngine, dovecot: DovecotServer
) -> None:
    account_id, user, _ = await synced_account(cli_env, dovecot, messages=1)
    dovecot.set_password(user, "rotated-by-the-user")
    async with running_sync(cli_env, account_id) as sync:

        async def failed() -> bool:
            row = await row_of(engine, account_id)
            return row is not None and row.sync_state == "auth_failed"

        await wait_for(failed)
        done = await inboxql(cli_env, "account", "set-password", str(account_id), stdin="rotated-by-the-user\n")
        assert done.code == 0, done.stderr
        dovecot.append(user, "rotated-by-the-user", "INBOX", [mail("after the new password")])

        async def arrived() -> bool:
            return len(await message_ids(engine, account_id)) == 2

        await wait_for(arrived)  # the same process, no restart
        assert sync.returncode is None
