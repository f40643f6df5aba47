"""RFC 7162: a folder that is followed learns what changed, not everything again. Checked on the wire (through
tests.imapproxy), since the end state of a full re-compare is the same and would hide a lost incremental path."""

from __future__ import annotations

from typing import Any

import pytest

from inboxql.devmail import DovecotServer
from inboxql.mailgen import generate
from schema.crypto import CredentialBox
from schema.unit import Store
from synccore.imap import ImapClient
from tests.conftest import new_user
from tests.imapproxy import Exchange, ImapProxy
from tests.sync.support import add_account, assert_identical, connect, sync_once


def _full_listings(proxy: ImapProxy) -> list[Exchange]:
    """UID FETCHes of every message of a folder without CHANGEDSINCE: a full compare."""
    return [
        e
        for e in proxy.commands("UID FETCH")
        if e.command.split()[3].startswith("1:") and "CHANGEDSINCE" not in e.command.upper()
    ]


async def _followed_account(
    store: Store, box: CredentialBox, dovecot: DovecotServer, proxy: ImapProxy
) -> tuple[str, str, int]:
    user, password = new_user(dovecot)
    dovecot.append(user, password, "INBOX", list(generate(60, seed=31)))
    account_id = await add_account(store, box, dovecot, user, password, via=proxy)
    await sync_once(store, box, account_id)
    return user, password, account_id


@pytest.mark.parametrize("any_dovecot", ["qresync", "condstore"], indirect=True)
async def test_a_flag_change_elsewhere_fetches_only_the_changed_messages(
    store: Store, credential_box: CredentialBox, any_dovecot: DovecotServer
) -> None:
    dovecot = any_dovecot
    async with ImapProxy(dovecot.host, dovecot.port) as proxy:
        user, password, account_id = await _followed_account(store, credential_box, dovecot, proxy)

        # Nothing changed: HIGHESTMODSEQ and UIDNEXT as before, so no folder is fetched from at all.
        proxy.clear()
        await sync_once(store, credential_box, account_id)
        assert [e for e in proxy.commands("UID FETCH") if "4294967295" not in e.command] == []

        other = await connect(dovecot, user, password)
        await other.select("INBOX")
        uids = await other.uid_search("ALL")
        changed = [uids[5], uids[40]]
        await other.uid_store(changed, "add", ["\\Flagged"])
        await other.logout()
        proxy.clear()
        await sync_once(store, credential_box, account_id)

        assert _full_listings(proxy) == [], [e.command for e in _full_listings(proxy)]
        if dovecot.capabilities is None:  # QRESYNC: SELECT itself reports the changed messages (RFC 7162 §3.2.5.2)
            [select] = [e for e in proxy.commands("SELECT") if e.mailbox == "INBOX"]
            assert "QRESYNC" in select.command.upper()
            assert sorted(select.fetched_uids) == changed
        else:  # CONDSTORE: one FETCH of the flags changed since the stored HIGHESTMODSEQ (RFC 7162 §3.1.4.1)
            [since] = [e for e in proxy.commands("UID FETCH") if "CHANGEDSINCE" in e.command.upper()]
            assert since.mailbox == "INBOX"
            assert since.command.split()[3] == "1:*"
            assert sorted(since.fetched_uids) == changed
        # Besides the changed two, only the newest message answers the probe for new mail (`UIDNEXT:*`).
        fetched = [uid for e in proxy.exchanges for uid in e.fetched_uids]
        assert sorted(set(fetched) - set(changed)) == [uids[-1]], fetched
        await assert_identical(store, credential_box, account_id)


@pytest.mark.parametrize("any_dovecot", ["qresync"], indirect=True)
async def test_an_expunge_elsewhere_is_learned_from_vanished(
    store: Store, credential_box: CredentialBox, any_dovecot: DovecotServer
) -> None:
    dovecot = any_dovecot
    async with ImapProxy(dovecot.host, dovecot.port) as proxy:
        user, password, account_id = await _followed_account(store, credential_box, dovecot, proxy)
        other = await connect(dovecot, user, password)
        await other.select("INBOX")
        uids = await other.uid_search("ALL")
        gone = [uids[3], uids[4], uids[50]]
        await other.uid_store(gone, "add", ["\\Deleted"])
        await other.uid_expunge(gone)
        await other.logout()
        proxy.clear()
        await sync_once(store, credential_box, account_id)

        assert _full_listings(proxy) == [], [e.command for e in _full_listings(proxy)]
        [select, *_] = [e for e in proxy.commands("SELECT") if e.mailbox == "INBOX"]
        assert "QRESYNC" in select.command.upper()
        assert select.vanished == [f"* VANISHED (EARLIER) {uids[3]}:{uids[4]},{uids[50]}"]
        assert [uid for e in proxy.exchanges for uid in e.fetched_uids if uid != uids[-1]] == []
        await assert_identical(store, credential_box, account_id)


# Dovecot tells a QRESYNC session of another session's flag change with its answer to the next UID FETCH; a session
# with CONDSTORE alone is told at its next IDLE or NOOP (a push, which starts another pass).
@pytest.mark.parametrize("any_dovecot", ["qresync"], indirect=True)
async def test_a_flag_change_told_with_the_fetch_of_new_mail_is_mirrored_by_that_pass(
    store: Store, credential_box: CredentialBox, any_dovecot: DovecotServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another client changes a flag after the pass's SELECT; the server tells of it with its answer to the pass's
    `UID FETCH uidnext:*` (a `*` range claims every UID's FETCH as its own). The pass kept only the new UIDs of that
    answer and recorded the SELECT's HIGHESTMODSEQ: the change was mirrored by nobody until something else made
    the folder change again (the write-back bench: 1,000 stars cleared directly, still starred after 120 s)."""
    dovecot = any_dovecot
    async with ImapProxy(dovecot.host, dovecot.port) as proxy:
        user, password, account_id = await _followed_account(store, credential_box, dovecot, proxy)
        other = await connect(dovecot, user, password)
        await other.select("INBOX")
        uids = await other.uid_search("ALL")
        await other.append("INBOX", next(iter(generate(1, seed=32))))  # new mail: the pass fetches `uidnext:*`
        fetch = ImapClient.uid_fetch
        changed: list[int] = []

        async def changing_first(self: ImapClient, uid_set: Any, items: str, **kw: Any) -> Any:
            if isinstance(uid_set, str) and uid_set.endswith(":*") and not uid_set.startswith("1:") and not changed:
                changed.append(uids[7])
                await other.uid_store([uids[7]], "add", ["\\Flagged"])
            return await fetch(self, uid_set, items, **kw)

        monkeypatch.setattr(ImapClient, "uid_fetch", changing_first)
        await sync_once(store, credential_box, account_id)
        monkeypatch.undo()
        await other.logout()
        assert changed == [uids[7]]
        await assert_identical(store, credential_box, account_id)
