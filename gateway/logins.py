"""Checking a login before credentials are stored (the operator API, and `inboxql account set-password`).

IMAP: connect (TLS verified, or STARTTLS), LOGIN (or, with an OAuth2 access token, AUTHENTICATE OAUTHBEARER or
XOAUTH2 as advertised), LOGOUT. SMTP: connect, AUTH, QUIT; nothing is sent. What went
wrong comes back as a typed `LoginProblem`, never as an exception, so the API answers it as a payload error.

The gateway reaches mail servers only through the protocol packages (`synccore.imap`, `synccore.smtp`), which
import nothing of the project (DESIGN.md: they could be published on their own), as it would a third-party
client library; it never imports the sync core itself.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from enum import StrEnum
from typing import cast

from schema.accounts import AccountInfo, SmtpSettings
from synccore.imap import AuthenticationFailed, ImapClient, ImapError, MissingCapability, Security
from synccore.smtp import Security as SmtpSecurity
from synccore.smtp import SmtpAuthFailed, SmtpEndpoint, SmtpError, check_login
from synccore.smtp.endpoint import is_loopback

CHECK_SECONDS = 20.0


class LoginProblemCode(StrEnum):
    LOGIN_REFUSED = "LOGIN_REFUSED"  # the IMAP server refused these credentials
    LOGIN_UNAVAILABLE = "LOGIN_UNAVAILABLE"  # it could not check them now (RFC 5530 [UNAVAILABLE]): try again
    UNREACHABLE = "UNREACHABLE"  # no IMAP connection (refused, timed out, TLS not verified)
    INSECURE = "INSECURE"  # a plaintext login to a host that is not loopback
    SMTP_LOGIN_REFUSED = "SMTP_LOGIN_REFUSED"
    SMTP_UNREACHABLE = "SMTP_UNREACHABLE"


@dataclass(frozen=True, slots=True)
class LoginProblem:
    code: LoginProblemCode
    message: str


@dataclass(frozen=True, slots=True)
class ImapLogin:
    host: str
    port: int
    security: str  # "tls", "starttls" or "none"
    username: str
    password: str
    tls_ca_file: str | None = None
    oauth2_token: str | None = None  # logs in with this access token instead of the password

    def __repr__(self) -> str:  # never show the password or the token
        return f"ImapLogin({self.security}://{self.username}@{self.host}:{self.port})"


async def check_imap(login: ImapLogin, *, allow_insecure: bool = False) -> LoginProblem | None:
    """None when the server takes the login."""
    where = f"{login.host}:{login.port}"
    if login.security == "none" and not allow_insecure and not is_loopback(login.host):
        return LoginProblem(LoginProblemCode.INSECURE, f"refusing a plaintext login to {login.host}: use TLS")
    client = ImapClient(timeout=CHECK_SECONDS)
    try:
        async with asyncio.timeout(CHECK_SECONDS):
            context = None
            if login.security != "none":
                context = ssl.create_default_context(cafile=login.tls_ca_file)
            security: Security = (
                "tls" if login.security == "tls" else "starttls" if login.security == "starttls" else "none"
            )
            await client.connect(login.host, login.port, security=security, ssl_context=context)
            if login.oauth2_token is not None:
                await client.authenticate_oauth2(login.username, login.oauth2_token, host=login.host, port=login.port)
            else:
                await client.login(login.username, login.password)
            await client.logout()
    except MissingCapability:
        return LoginProblem(LoginProblemCode.LOGIN_REFUSED, f"{where} offers neither OAUTHBEARER nor XOAUTH2")
    except AuthenticationFailed as exc:
        if exc.code is not None and exc.code.name == "UNAVAILABLE":
            return LoginProblem(LoginProblemCode.LOGIN_UNAVAILABLE, f"{where} cannot check logins now: {exc.text}")
        return LoginProblem(LoginProblemCode.LOGIN_REFUSED, f"{where} refused the login of {login.username!r}")
    except (ImapError, OSError, TimeoutError) as exc:
        return LoginProblem(LoginProblemCode.UNREACHABLE, f"cannot reach {where}: {type(exc).__name__}: {exc}")
    finally:
        await client.close()
    return None


async def check_smtp(
    smtp: SmtpSettings, username: str, password: str, tls_ca_file: str | None, *, oauth2_token: str | None = None
) -> LoginProblem | None:
    """None when the submission server takes the login (smtp.username, or the IMAP `username`), with the password
    or the OAuth2 access token."""
    where = f"{smtp.host}:{smtp.port}"
    try:
        endpoint = SmtpEndpoint(
            host=smtp.host,
            port=smtp.port,
            security=cast(SmtpSecurity, smtp.security),
            username=smtp.username or username,
            password=password,
            ca_file=tls_ca_file,
            oauth2_token=oauth2_token,
        )
    except ValueError as exc:
        return LoginProblem(LoginProblemCode.INSECURE, f"SMTP {where}: {exc}")
    try:
        async with asyncio.timeout(CHECK_SECONDS):
            await check_login(endpoint, timeout=CHECK_SECONDS)
    except SmtpAuthFailed:
        return LoginProblem(LoginProblemCode.SMTP_LOGIN_REFUSED, f"{where} refused the login of {endpoint.username!r}")
    except (SmtpError, OSError, TimeoutError) as exc:
        return LoginProblem(LoginProblemCode.SMTP_UNREACHABLE, f"cannot reach {where}: {exc}")
    return None


async def check_credentials(found: AccountInfo, password: str, smtp_password: str | None) -> LoginProblem | None:
    """New credentials of an existing account, tried before they replace the stored ones: the IMAP login, and the
    SMTP one when sending uses the new password (its own, or the IMAP one it shares). The endpoints were accepted
    when the account was added, --allow-insecure included, so they are checked as they are."""
    imap = found.imap
    login = ImapLogin(imap.host, imap.port, imap.security, imap.username, password, imap.tls_ca_file)
    problem = await check_imap(login, allow_insecure=True)
    if problem is None and found.smtp is not None and (smtp_password is not None or not found.own_smtp_password):
        problem = await check_smtp(found.smtp, imap.username, smtp_password or password, imap.tls_ca_file)
    return problem
