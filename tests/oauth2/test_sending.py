"""The outbox of an OAuth2 account sends through Postfix (SASL by Dovecot's oauth2 passdb) with its access token,
and a token the submission server refuses is refreshed once and the send tried again."""

from __future__ import annotations

from sqlalchemy import select

from inboxql.devmail import DovecotServer
from inboxql.devsmtp import PostfixServer
from mime.compose import Draft, Mailbox
from schema import accounts, outbox
from schema.crypto import CredentialBox, Purpose
from schema.models import Account, Outbox
from schema.outbox import OutboxState
from schema.unit import Store
from synccore.account import AccountSync, Tuning
from synccore.tokens import TokenKeeper
from tests.oauth2.conftest import CLIENT
from tests.oauth2.test_refresh import add_oauth2_account
from tests.oauth2server import AuthServer


async def test_a_send_with_a_refused_token_refreshes_it_once_and_goes_out(
    store: Store,
    credential_box: CredentialBox,
    oauth_dovecot: DovecotServer,
    oauth_postfix: PostfixServer,
    auth_server: AuthServer,
    oauth_user: tuple[str, str],
    keeper: TokenKeeper,
) -> None:
    user, _ = oauth_user
    account_id = await add_oauth2_account(
        store, credential_box, oauth_dovecot, user, auth_server.grant(CLIENT[0], user)
    )
    await accounts.set_smtp(
        store, account_id, accounts.SmtpSettings(oauth_postfix.host, oauth_postfix.port, "starttls"),
        str(oauth_dovecot.ca_file),
    )  # fmt: skip
    sync = AccountSync(store, credential_box, account_id, Tuning(poll_interval=0.2), tokens=keeper)
    await sync.run_once()  # the folders, Sent among them
    async with store.sessions() as s:
        row = await s.get(Account, account_id)
    assert row is not None
    assert row.oauth2_access_token is not None
    auth_server.revoke_access(credential_box.open(row.oauth2_access_token, Purpose.ACCOUNT))  # cached as good

    me = Mailbox(oauth_dovecot.address(user))
    async with store.unit(account_id) as uow:
        entry = await outbox.queue_draft(uow, Draft(sender=me, to=(me,), subject="to myself", text="hello"))
    refreshes = keeper.refreshes
    executor = sync._executor()
    try:
        await executor.drain()
    finally:
        await executor.close()
    async with store.sessions() as s:
        sent = await s.scalar(select(Outbox).where(Outbox.id == entry.id))
    assert sent is not None
    assert sent.state == OutboxState.SENT.value, sent.error
    assert keeper.refreshes == refreshes + 1
