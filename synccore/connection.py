"""Opening an authenticated IMAP connection for an account: TLS verified, secrets never logged."""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from synccore.imap import AuthenticationFailed, ImapClient, Security

if TYPE_CHECKING:
    from schema.models import Account

# How long a command may wait without the connection moving a byte (synccore.imap: inactivity, not total time).
IMAP_TIMEOUT = 60.0

# RFC 5530 §3: codes saying the credentials themselves were refused; only new ones can help.
_CREDENTIALS_REFUSED = frozenset({"AUTHENTICATIONFAILED", "AUTHORIZATIONFAILED", "EXPIRED"})


class Refusal(StrEnum):
    """What a refused login says about the credentials."""

    WRONG = "wrong"  # [AUTHENTICATIONFAILED] and kin: wait for new credentials
    UNCLEAR = "unclear"  # a plain NO: many servers say nothing more, also when the password is wrong
    TEMPORARY = "temporary"  # [UNAVAILABLE], [LIMIT], [INUSE], BAD, ...: try again later


def refusal(exc: AuthenticationFailed) -> Refusal:
    """Dovecot answers `NO [UNAVAILABLE]` when its password database is down and `NO [AUTHENTICATIONFAILED]`
    to a wrong password; a BAD is a protocol hiccup, not a verdict on the password."""
    if exc.status != "NO":
        return Refusal.TEMPORARY
    if exc.code is None:
        return Refusal.UNCLEAR
    return Refusal.WRONG if exc.code.name.upper() in _CREDENTIALS_REFUSED else Refusal.TEMPORARY


class InsecureConnection(Exception):
    """Plaintext login to a non-loopback host was refused."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int
    security: str
    username: str
    password: str
    tls_ca_file: str | None = None
    # An OAuth2 access token: the login is AUTHENTICATE OAUTHBEARER or XOAUTH2 (as advertised), not LOGIN.
    oauth2_token: str | None = None

    def __repr__(self) -> str:  # never show the password or the token
        return f"Endpoint({self.security}://{self.username}@{self.host}:{self.port})"

    @classmethod
    def of(cls, account: Account, password: str, oauth2_token: str | None = None) -> Endpoint:
        """A stored account's IMAP server, with its opened password (or an access token)."""
        return cls(
            account.imap_host,
            account.imap_port,
            account.imap_security,
            account.imap_username,
            password,
            account.tls_ca_file,
            oauth2_token,
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """Verified TLS: the system's trust store, or only the given CA (a private server's)."""
    return ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()


async def open_client(
    endpoint: Endpoint, *, allow_insecure: bool = False, inactivity: float = IMAP_TIMEOUT
) -> ImapClient:
    security: Security
    if endpoint.security == "tls":
        security = "tls"
    elif endpoint.security == "starttls":
        security = "starttls"
    else:
        security = "none"
        if not allow_insecure and not is_loopback(endpoint.host):
            raise InsecureConnection(f"refusing a plaintext login to {endpoint.host}: use imaps:// or STARTTLS")
    client = ImapClient(timeout=inactivity)
    context = tls_context(endpoint.tls_ca_file) if security != "none" else None
    await client.connect(endpoint.host, endpoint.port, security=security, ssl_context=context)
    try:
        if endpoint.oauth2_token is not None:
            await client.authenticate_oauth2(
                endpoint.username, endpoint.oauth2_token, host=endpoint.host, port=endpoint.port
            )
        else:
            await client.login(endpoint.username, endpoint.password)
        for wanted in ("QRESYNC", "CONDSTORE"):
            if client.has(wanted) and client.has("ENABLE"):
                await client.enable(wanted)
                break
    except BaseException:
        await client.close()
        raise
    return client
