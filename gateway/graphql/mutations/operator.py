"""The operator API: add an account (its login checked first), set new credentials, remove an account, so a
product can onboard its users without a shell. `managedAccounts` (gateway.graphql.query) lists them.

Scope: every field needs an operator token (`inboxql token create --operator`): no token is UNAUTHENTICATED, any
other token (admin ones included) FORBIDDEN, before any argument is looked at. An operator token reads no mail.

A login the servers do not accept is not an error of the request: the payload's `problem` says why (a typed
code and a message) and nothing is stored. Malformed input is BAD_USER_INPUT; an unknown account NOT_FOUND.
"""

from __future__ import annotations

import strawberry

import oauth
from gateway import logins
from gateway.consent import ConsentLink, mint
from gateway.errors import BadUserInput, not_found
from gateway.graphql.context import Info
from gateway.graphql.types.fields import described
from gateway.graphql.types.operator import (
    AccountPayload,
    AddAccountInput,
    LoginProblem,
    ManagedAccount,
    OAuth2ConsentInput,
    OAuth2ConsentLink,
    RemovedAccount,
    SetAccountCredentialsInput,
    SmtpServerInput,
)
from gateway.ids import pk_of, to_global
from gateway.logins import ImapLogin, check_credentials, check_imap, check_smtp
from schema import accounts
from schema.models import Account as AccountRow
from schema.shards import shard_of
from schema.unit import Store

MAX_HOST = 255
MAX_LOGIN = 320
MAX_PASSWORD = 1024
# Removing waits this long for the sync process to let go (it does at its next rescan, within 10 s).
REMOVE_WAIT_SECONDS = 15.0


def _text(value: str, what: str, limit: int) -> str:
    if not value or len(value) > limit or not value.isprintable():
        raise BadUserInput(f"{what} must be 1 to {limit} printable characters")
    return value


def _port(value: int) -> int:
    if not 0 < value < 65536:
        raise BadUserInput("a port is 1 to 65535")
    return value


def _password(value: str, what: str = "the password") -> str:
    if not value or len(value) > MAX_PASSWORD or "\r" in value or "\n" in value:
        raise BadUserInput(f"{what} must be 1 to {MAX_PASSWORD} characters on one line")
    return value


def _smtp(smtp: SmtpServerInput) -> accounts.SmtpSettings:
    username = _text(smtp.username, "the SMTP username", MAX_LOGIN) if smtp.username is not None else None
    return accounts.SmtpSettings(
        _text(smtp.host, "the SMTP host", MAX_HOST), _port(smtp.port), smtp.security.value, username
    )


def _store(info: Info, account_id: int) -> Store:
    """The store of the account's shard; NOT_FOUND for an id of a shard this deployment does not list."""
    found = info.context.services.stores.get(shard_of(account_id))
    if found is None:
        raise not_found("Account")
    return found


async def _managed(info: Info, account_id: int) -> ManagedAccount:
    async with _store(info, account_id).sessions() as session:
        row = await session.get(AccountRow, account_id)
    if row is None:
        raise not_found("Account")
    return ManagedAccount.of(row)


def _problem(found: logins.LoginProblem) -> AccountPayload:
    return AccountPayload(account=None, problem=LoginProblem(code=found.code, message=found.message))


@strawberry.type
class OperatorMutations:
    @described(
        "Add an account: the IMAP login (and the SMTP one, when given) is checked first; a refused login is the "
        "payload's problem and stores nothing. Operator-scoped."
    )
    async def add_account(self, info: Info, input: AddAccountInput) -> AccountPayload:
        info.context.operator()
        imap = input.imap
        login = ImapLogin(
            _text(imap.host, "the IMAP host", MAX_HOST),
            _port(imap.port),
            imap.security.value,
            _text(imap.username, "the IMAP username", MAX_LOGIN),
            _password(imap.password),
        )
        smtp = _smtp(input.smtp) if input.smtp is not None else None
        smtp_password = None
        if input.smtp is not None and input.smtp.password is not None:
            smtp_password = _password(input.smtp.password, "the SMTP password")
        address = input.address or (login.username if "@" in login.username else f"{login.username}@{login.host}")
        _text(address, "the address", MAX_LOGIN)
        problem = await check_imap(login)
        if problem is None and smtp is not None:
            problem = await check_smtp(smtp, login.username, smtp_password or login.password, None)
        if problem is not None:
            return _problem(problem)
        endpoint = accounts.ImapEndpoint(login.host, login.port, login.security, login.username)
        services = info.context.services
        shard = await accounts.place(services.engines)  # the least loaded shard (shard 0 on a single server)
        account_id = await accounts.create(
            services.stores[shard], services.box, address, endpoint, login.password, smtp, smtp_password, shard=shard
        )
        return AccountPayload(account=await _managed(info, account_id), problem=None)

    @strawberry.field(  # type: ignore[untyped-decorator]
        name="createOAuth2ConsentLink",
        description="A single-use start link of the OAuth2 consent flow (authorization code with PKCE) for one "
        "mailbox: the user's browser goes there, consents at the provider, and comes back to the gateway, which "
        "checks the IMAP login with the new token and creates the account (or re-authorizes the one with that "
        "login, leaving needs_consent). Operator-scoped; the link expires after an hour.",
    )
    async def create_oauth2_consent_link(self, info: Info, input: OAuth2ConsentInput) -> OAuth2ConsentLink:
        info.context.operator()
        login = _text(input.login, "the login", MAX_LOGIN)
        host = _text(input.imap.host, "the IMAP host", MAX_HOST)
        smtp = _smtp(input.smtp) if input.smtp is not None else None
        if input.smtp is not None and input.smtp.password is not None:
            raise BadUserInput("an OAuth2 account sends with its access token: give no SMTP password")
        address = _text(input.address or (login if "@" in login else f"{login}@{host}"), "the address", MAX_LOGIN)
        link = ConsentLink(
            provider=_text(input.provider, "the provider", 64).lower(),
            login=login,
            address=address,
            imap_host=host,
            imap_port=_port(input.imap.port),
            imap_security=input.imap.security.value,
            smtp_host=smtp.host if smtp else None,
            smtp_port=smtp.port if smtp else None,
            smtp_security=smtp.security if smtp else None,
            smtp_username=smtp.username if smtp else None,
        )
        try:
            url, expires = await mint(info.context.services, link, str(info.context.request.base_url))
        except oauth.ProviderNotConfigured as exc:
            raise BadUserInput(str(exc)) from None
        return OAuth2ConsentLink(url=url, expires_at=expires)

    @described(
        "New credentials for an account, checked with its servers first (a refused login is the payload's problem "
        "and changes nothing). They replace the old in place (the same account, the same ids) and clear "
        "auth_failed: the sync tries again. Operator-scoped."
    )
    async def set_account_credentials(self, info: Info, input: SetAccountCredentialsInput) -> AccountPayload:
        info.context.operator()
        account_id = pk_of(input.account_id, "Account")
        password = _password(input.password)
        smtp_password = _password(input.smtp_password, "the SMTP password") if input.smtp_password else None
        services = info.context.services
        store = _store(info, account_id)
        async with store.sessions() as session:
            found = await accounts.info(session, account_id)
        if found is None or found.sync_state == accounts.REMOVING:
            raise not_found("Account")
        problem = await check_credentials(found, password, smtp_password)
        if problem is not None:
            return _problem(problem)
        if not await accounts.set_password(store, services.box, account_id, password, smtp_password):
            raise not_found("Account")
        return AccountPayload(account=await _managed(info, account_id), problem=None)

    @described(
        "Remove an account: its mirror, change log, webhooks, queued actions and outbox are deleted and the tokens "
        "that grant it revoked (their open streams end). Operator-scoped."
    )
    async def remove_account(self, info: Info, account_id: strawberry.ID) -> RemovedAccount:
        info.context.operator()
        pk = pk_of(account_id, "Account")
        store, home = _store(info, pk), info.context.services.store
        removed = await accounts.remove(
            store, pk, wait_seconds=REMOVE_WAIT_SECONDS, home=None if store is home else home
        )
        if removed is None:
            raise not_found("Account")
        return RemovedAccount(
            account_id=strawberry.ID(to_global("Account", pk)),
            revoked_tokens=len(removed.revoked_tokens),
            released=removed.let_go,
        )
