"""The sync core labels an account's work for the sampler: an initial sync's stacks hang under `account:ID`."""

from __future__ import annotations

from inboxql.devmail import DovecotServer
from inboxql.mailgen import generate
from ops.sampler import ProfilerConfig, Sampler
from schema.crypto import CredentialBox
from schema.unit import Store
from tests.sync.support import add_account, sync_once


async def test_an_accounts_sync_is_sampled_under_its_id(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    user, password = mail_user
    dovecot.append(user, password, "INBOX", list(generate(400, seed=5)))
    account_id = await add_account(store, credential_box, dovecot, user, password)
    sampler = Sampler(ProfilerConfig(hz=200))
    sampler.start()
    try:
        await sync_once(store, credential_box, account_id)
    finally:
        sampler.stop()
    stacks = sampler.profile().stacks

    def folder_work(labelled: bool) -> int:
        return sum(
            count
            for stack, count in stacks.items()
            if (stack[0] == f"account:{account_id}") is labelled
            and any(f.startswith("synccore.folder:") for f in stack)
        )

    # The folder sync runs in the account's task and in tasks it starts (the write queue): all carry the label,
    # but for a sample whose task changed while its frames were read (then the label is dropped, not guessed).
    assert folder_work(labelled=True) >= 10, list(stacks)[:10]
    assert folder_work(labelled=False) <= 0.1 * folder_work(labelled=True)
