"""What the operator API (gateway.graphql.mutations.operator, `managedAccounts`) shows and takes: accounts with
their servers and sync state (never their passwords), and the typed problem of a login that did not work."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum
from typing import Any

import strawberry
from sqlalchemy.engine import Row

from gateway.graphql import pages
from gateway.graphql.types.fields import utc
from gateway.ids import to_global
from gateway.logins import LoginProblemCode
from schema.models import Account as AccountRow

MANAGED_KEYS = (pages.Key(AccountRow.id, False, "id"),)

strawberry.enum(LoginProblemCode, name="LoginProblemCode", description="Why a login was not accepted.")


@strawberry.enum(description="How the IMAP connection is secured.")
class ImapSecurity(Enum):
    TLS = "tls"  # implicit TLS (imaps, port 993)
    STARTTLS = "starttls"
    NONE = "none"  # loopback hosts only


@strawberry.enum(description="How the SMTP submission connection is secured.")
class SmtpSecurity(Enum):
    TLS = "tls"  # implicit TLS (port 465)
    STARTTLS = "starttls"  # required, not opportunistic (port 587)
    PLAIN = "plain"  # loopback hosts only


@strawberry.type(description="An IMAP server and the login used there (never the password).")
class ImapServer:
    host: str
    port: int
    security: str
    username: str


@strawberry.type(description="An SMTP submission server; username null: the IMAP login.")
class SmtpServer:
    host: str
    port: int
    security: str
    username: str | None


@strawberry.type(description="An account as an operator sees it: its servers and sync state. Operator-scoped.")
class ManagedAccount:
    id: strawberry.ID = strawberry.field(description="The account's global id (the same as Account.id).")
    address: str
    imap: ImapServer
    smtp: SmtpServer | None
    sync_state: str = strawberry.field(
        description="pending, syncing, ready, error, auth_failed, needs_consent (its OAuth2 grant was refused: "
        "run the consent flow again) or removing."
    )
    sync_error: str | None = strawberry.field(description="The last error of the sync, if any.")
    created_at: datetime
    oauth2_provider: str | None = strawberry.field(
        default=None, description="The OAuth2 provider the account logs in through; null: a password."
    )

    @classmethod
    def of(cls, row: Row[Any] | AccountRow) -> ManagedAccount:
        smtp = None
        if row.smtp_host is not None and row.smtp_port is not None:
            smtp = SmtpServer(
                host=row.smtp_host,
                port=row.smtp_port,
                security=row.smtp_security or "starttls",
                username=row.smtp_username,
            )
        return cls(
            id=strawberry.ID(to_global("Account", row.id)),
            address=row.address,
            imap=ImapServer(
                host=row.imap_host, port=row.imap_port, security=row.imap_security, username=row.imap_username
            ),
            smtp=smtp,
            sync_state=row.sync_state,
            sync_error=row.sync_error,
            created_at=utc(row.created_at) or datetime.now(UTC),
            oauth2_provider=row.oauth2_provider,
        )


@strawberry.type(description="Why the servers did not accept a login; nothing was stored.")
class LoginProblem:
    code: LoginProblemCode
    message: str


@strawberry.type(description="The account, or the problem of its login (then nothing was stored).")
class AccountPayload:
    account: ManagedAccount | None
    problem: LoginProblem | None


@strawberry.type(description="A removed account: its mirror, change log, webhooks and pending work are deleted.")
class RemovedAccount:
    account_id: strawberry.ID
    revoked_tokens: int = strawberry.field(description="How many tokens that granted the account were revoked.")
    released: bool = strawberry.field(
        description="Whether the sync process holding the account let go before its data was deleted."
    )


@strawberry.input(description="An IMAP server and login.")
class ImapServerInput:
    host: str
    port: int
    security: ImapSecurity
    username: str
    password: str


@strawberry.input(description="An SMTP submission server; username and password default to the IMAP login's.")
class SmtpServerInput:
    host: str
    port: int
    security: SmtpSecurity
    username: str | None = None
    password: str | None = None


@strawberry.input(description="A new account: its login is checked before anything is stored.")
class AddAccountInput:
    imap: ImapServerInput
    smtp: SmtpServerInput | None = None
    address: str | None = strawberry.field(default=None, description="Default: the IMAP user name (or user@host).")


@strawberry.input(description="New credentials for an account: checked with its servers first.")
class SetAccountCredentialsInput:
    account_id: strawberry.ID
    password: str = strawberry.field(description="The IMAP password (and the SMTP one, unless sending has its own).")
    smtp_password: str | None = strawberry.field(default=None, description="A password of its own for sending.")


@strawberry.input(description="An IMAP server an OAuth2 login goes to (no password: the consent grants access).")
class OAuth2ImapServerInput:
    host: str
    port: int
    security: ImapSecurity


@strawberry.input(description="Whose mailbox a consent link connects, through which provider, on which servers.")
class OAuth2ConsentInput:
    provider: str = strawberry.field(description="A provider configured by name (INBOXQL_OAUTH2_<NAME>_*).")
    login: str = strawberry.field(
        description="The IMAP login (usually the address); the provider's page is pre-filled with it, and the "
        "consent must be given by that mailbox."
    )
    imap: OAuth2ImapServerInput
    smtp: SmtpServerInput | None = strawberry.field(
        default=None, description="Sending, with the same OAuth2 login (a password given here is refused)."
    )
    address: str | None = strawberry.field(default=None, description="Default: the login (or login@host).")


@strawberry.type(description="A start link of the OAuth2 consent flow: single use, for the user's browser.")
class OAuth2ConsentLink:
    url: str = strawberry.field(description="Send the user here; it leads to the provider's consent page.")
    expires_at: datetime
