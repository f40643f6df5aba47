"""The plain progress lines of `inboxql sync --once` when piped: rates over the run, whenever a folder was first
seen."""

from __future__ import annotations

import io
import re
import time
from datetime import UTC, datetime

from inboxql.progress import LinesView
from schema.status import AccountStatus, FolderProgress, Snapshot


def _snap(folders: tuple[FolderProgress, ...], state: str = "initial") -> Snapshot:
    account = AccountStatus(
        id=7,
        address="me@example.test",
        sync_state=state,
        sync_error=None,
        sync_error_at=None,
        lease_holder=None,
        lease_expires_at=None,
        change_log_head=0,
        folders=folders,
        webhooks=(),
    )
    return Snapshot(taken_at=datetime.now(UTC), accounts=(account,))


def _inbox(mirrored: int) -> FolderProgress:
    return FolderProgress(
        id=3,
        name="INBOX",
        role="inbox",
        sync_state="initial",
        mirrored=mirrored,
        server_count=600,
        sync_error=None,
        sync_error_at=None,
        synced_at=None,
    )


def test_a_folder_discovered_and_synced_between_two_snapshots_gets_its_rate_over_the_run() -> None:
    out = io.StringIO()
    view = LinesView(out)
    view.show(_snap(()))  # the account before its folders were discovered
    time.sleep(0.05)
    view.close(_snap((_inbox(600),), state="ready"))
    lines = out.getvalue().splitlines()
    assert re.fullmatch(
        r"account 7 me@example\.test INBOX: 600 of 600 messages \([\d,]+ msg/s over [\d.]+ s\)", lines[-1]
    ), lines
    assert re.fullmatch(
        r"account 7 me@example\.test: 600 of 600 messages, ready \([\d,]+ msg/s over [\d.]+ s\)", lines[-2]
    ), lines


def test_a_folder_already_mirrored_when_the_run_began_claims_no_rate() -> None:
    out = io.StringIO()
    view = LinesView(out)
    view.show(_snap((_inbox(600),), state="ready"))
    view.close(_snap((_inbox(600),), state="ready"))
    assert out.getvalue().splitlines() == [
        "account 7 me@example.test: 600 of 600 messages, ready",
        "account 7 me@example.test INBOX: 600 of 600 messages",
    ]


def test_a_folder_seen_part_way_counts_its_rate_from_where_it_was_first_seen() -> None:
    out = io.StringIO()
    view = LinesView(out)
    view.show(_snap((_inbox(100),)))
    time.sleep(0.05)
    view.close(_snap((_inbox(600),), state="ready"))
    inbox = [line for line in out.getvalue().splitlines() if " INBOX: " in line]
    assert inbox[0] == "account 7 me@example.test INBOX: 100 of 600 messages"
    rate = re.fullmatch(r".* INBOX: 600 of 600 messages \(([\d,]+) msg/s over ([\d.]+) s\)", inbox[-1])
    assert rate is not None, inbox
    # 500 moved in the run, not 600.
    assert int(rate[1].replace(",", "")) <= 500 / 0.05 + 1
