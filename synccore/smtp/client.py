"""`submit`: hand one message to a submission server (RFC 6409) over aiosmtplib; or `open_session` first (the
connection and login) and `Session.send` later.

One connection per message, step by step, so that every failure is classified by *when* it happened:

    connect (TLS or STARTTLS, verified) -> EHLO -> AUTH -> MAIL FROM -> RCPT TO (each) -> DATA -> payload -> QUIT
    |<------------- nothing sent yet: a broken connection is SmtpTransient ------------->|<- SmtpUncertain ->|

aiosmtplib's `data()` sends the DATA command and the payload in one call, so a dropped connection there could mean
either side of the line above. We send DATA as a command and the payload through the protocol ourselves, so a
loss before the 354 is transient and only a loss after the payload went out is uncertain.
"""

# `timeout` bounds each network step (aiosmtplib's own per-command timeout), not the call: ASYNC109 would have
# the caller wrap the whole submission in asyncio.timeout, which could cut it after the payload went out.
# ruff: noqa: ASYNC109

from __future__ import annotations

import base64
import contextlib
import re
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import aiosmtplib
from aiosmtplib import (
    SMTPAuthenticationError,
    SMTPConnectResponseError,
    SMTPException,
    SMTPRecipientRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)

from .endpoint import SmtpEndpoint
from .errors import SmtpAuthFailed, SmtpError, SmtpPermanent, SmtpTlsFailed, SmtpTransient, SmtpUncertain

__all__ = ["Session", "SubmitResult", "check_login", "open_session", "submit", "tls_context"]

_LINE_END = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"^\.", re.M)


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """The server took the message for `accepted`; `refused` are the recipients it turned down (address ->
    (code, text)): a 4xx one may be tried again later on its own, a 5xx one will not work."""

    accepted: tuple[str, ...]
    refused: Mapping[str, tuple[int, str]] = field(default_factory=dict)
    code: int = 250
    text: str = ""  # the server's final reply, often with its queue id


def tls_context(endpoint: SmtpEndpoint) -> ssl.SSLContext:
    """Verified TLS (certificate chain and host name) against `ca_file` or the system's store."""
    context = ssl.create_default_context(cafile=endpoint.ca_file)
    if not endpoint.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _by_code(code: int, text: str, refused: Mapping[str, tuple[int, str]] | None = None) -> SmtpError:
    """RFC 5321 §4.2.1: 4yz is a transient negative reply, 5yz a permanent one."""
    if 400 <= code < 500:
        return SmtpTransient(text, code=code, refused=refused)
    if code >= 500:
        return SmtpPermanent(text, code=code, refused=refused)
    # A positive reply where a negative was expected: the server does not speak SMTP as we do.
    return SmtpPermanent(f"unexpected reply: {text}", code=code, refused=refused)


def _tls_failure(error: BaseException) -> ssl.SSLError | None:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _stuffed(message: bytes) -> bytes:
    """The DATA payload: CRLF line ends, leading dots doubled (RFC 5321 §4.5.2), the final "." line."""
    data = _LINE_END.sub(b"\r\n", message)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return _LEADING_DOT.sub(b"..", data) + b".\r\n"


async def _connect(client: aiosmtplib.SMTP, endpoint: SmtpEndpoint) -> None:
    try:
        await client.connect()
    except SMTPConnectResponseError as error:  # the greeting itself was negative (e.g. 421, 554)
        raise _by_code(error.code, error.message) from error
    except (SMTPException, OSError, TimeoutError) as error:
        tls = _tls_failure(error)
        if tls is not None:
            raise SmtpTlsFailed(f"TLS with {endpoint.host}:{endpoint.port} failed: {tls}") from error
        if endpoint.security == "starttls" and isinstance(error, SMTPException) and "STARTTLS" in str(error):
            raise SmtpTlsFailed(f"{endpoint.host} does not offer STARTTLS: {error}") from error
        raise SmtpTransient(f"no connection to {endpoint.host}:{endpoint.port}: {error}") from error


def _oauthbearer(user: str, token: str, host: str, port: int) -> bytes:
    """RFC 7628 §3.1's initial client response (base64): a GS2 header naming the user, then host, port, token.
    (synccore.imap.sasl builds the same for IMAP; this package stays free of project imports.)"""
    if any(c in user + token for c in "\x01\r\n"):
        raise SmtpAuthFailed("a user name or token holding control characters")
    authzid = user.replace("=", "=3D").replace(",", "=2C")
    return base64.b64encode(f"n,a={authzid},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01".encode())


async def _login_oauth2(client: aiosmtplib.SMTP, endpoint: SmtpEndpoint, token: str) -> None:
    """RFC 4954 AUTH with an access token: OAUTHBEARER when EHLO offers it, else XOAUTH2. A refused token gets a
    334 challenge (base64 JSON) that must be answered (RFC 7628 §3.2.3: %x01; XOAUTH2: an empty line) before the
    server sends its 535."""
    assert endpoint.username is not None
    if client.is_ehlo_or_helo_needed:
        await client.ehlo()
    offered = {method.upper() for method in client.server_auth_methods}
    if "OAUTHBEARER" in offered:
        initial = _oauthbearer(endpoint.username, token, endpoint.host, endpoint.port)
        reply = await client.execute_command(b"AUTH", b"OAUTHBEARER", initial)
        if reply.code == 334:
            reply = await client.execute_command(base64.b64encode(b"\x01"))
        if reply.code != 235:
            raise SMTPAuthenticationError(reply.code, reply.message)
    elif "XOAUTH2" in offered:
        await client.auth_xoauth2(endpoint.username, token)  # aiosmtplib answers the challenge itself
    else:
        raise SMTPException("the server offers neither OAUTHBEARER nor XOAUTH2")


async def _login(client: aiosmtplib.SMTP, endpoint: SmtpEndpoint) -> None:
    if endpoint.username is None:
        return
    try:
        if endpoint.oauth2_token is not None:
            await _login_oauth2(client, endpoint, endpoint.oauth2_token)
        else:
            await client.login(endpoint.username, endpoint.password or "")
    except SMTPAuthenticationError as error:
        if 400 <= error.code < 500:  # RFC 4954 §6: 454 temporary authentication failure
            raise SmtpTransient(error.message, code=error.code) from error
        raise SmtpAuthFailed(error.message, code=error.code) from error
    except SMTPResponseException as error:
        raise _by_code(error.code, error.message) from error
    except (SMTPServerDisconnected, SMTPTimeoutError):
        raise
    except SMTPException as error:  # no AUTH offered, or none we speak
        raise SmtpAuthFailed(str(error)) from error


async def _envelope(
    client: aiosmtplib.SMTP, envelope_from: str, recipients: Sequence[str]
) -> tuple[list[str], dict[str, tuple[int, str]]]:
    try:
        await client.mail(envelope_from)
    except SMTPSenderRefused as error:
        raise _by_code(error.code, error.message) from error
    accepted: list[str] = []
    refused: dict[str, tuple[int, str]] = {}
    for recipient in dict.fromkeys(recipients):
        try:
            await client.rcpt(recipient)
        except SMTPRecipientRefused as error:
            refused[recipient] = (error.code, error.message)
        else:
            accepted.append(recipient)
    if not accepted:
        # Transient if any refusal was: the caller may try again later.
        worst = min(refused.values(), key=lambda reply: reply[0])
        raise _by_code(worst[0], f"every recipient was refused: {worst[1]}", refused)
    return accepted, refused


async def _data(client: aiosmtplib.SMTP, message: bytes, timeout: float, final_timeout: float) -> tuple[int, str]:
    start = await client.execute_command(b"DATA", timeout=timeout)
    if start.code != 354:
        raise _by_code(start.code, start.message)
    protocol = client.protocol
    if protocol is None:
        raise SMTPServerDisconnected("Connection lost")
    # Raises SMTPServerDisconnected, before a byte went out, if the connection is already gone: transient.
    protocol.write(_stuffed(message))
    # From here on the server may have the message (written, if not yet flushed). No await between write and
    # read_response, so the reply cannot arrive before the protocol expects it.
    try:
        reply = await protocol.read_response(timeout=final_timeout)
    except (SMTPServerDisconnected, SMTPTimeoutError, OSError) as error:
        client.close()
        raise SmtpUncertain(
            f"the connection broke after the message was sent, before the server answered: {error}"
        ) from error
    if reply.code != 250:
        raise _by_code(reply.code, reply.message)
    return reply.code, reply.message


def _client(endpoint: SmtpEndpoint, timeout: float) -> aiosmtplib.SMTP:
    return aiosmtplib.SMTP(
        hostname=endpoint.host,
        port=endpoint.port,
        use_tls=endpoint.security == "tls",
        start_tls=endpoint.security == "starttls",  # True: required, not opportunistic
        tls_context=tls_context(endpoint) if endpoint.security != "plain" else None,
        timeout=timeout,
    )


async def check_login(endpoint: SmtpEndpoint, *, timeout: float = 30.0) -> None:
    """Connect, log in and quit, sending nothing: whether the endpoint takes these credentials. Raises
    SmtpAuthFailed when it refuses them, SmtpTlsFailed or SmtpTransient when it cannot be reached as asked."""
    session = await open_session(endpoint, timeout=timeout)
    await session.close()


class Session:
    """A connection that is open and logged in, with nothing of a message sent on it yet (`open_session`): a
    caller may open it while it still decides whether to send (the outbox claims its entry meanwhile) and
    close it unused. One message per session."""

    def __init__(self, client: aiosmtplib.SMTP, timeout: float) -> None:
        self._client = client
        self._timeout = timeout

    async def send(
        self, envelope_from: str, recipients: Sequence[str], message: bytes, *, final_timeout: float = 600.0
    ) -> SubmitResult:
        """Submit `message` (RFC 5322 bytes, e.g. from `mime.compose`) for `recipients`, then close.

        `final_timeout` bounds the wait for the reply to the message itself, which RFC 5321 §4.5.3.2.6 puts at
        10 minutes (servers scan mail before they answer, and giving up early turns a delivered message into an
        uncertain one). Returns when the server accepted the message for at least one recipient; raises an
        `SmtpError` otherwise (see `errors` for what each means for a retry)."""
        if not recipients:
            await self.close()
            raise ValueError("no recipients")
        client = self._client
        try:
            try:
                accepted, refused = await _envelope(client, envelope_from, recipients)
                code, text = await _data(client, message, self._timeout, final_timeout)
            except (SMTPServerDisconnected, SMTPTimeoutError, OSError) as error:
                raise SmtpTransient(f"connection lost before the message was sent: {error}") from error
            except SMTPResponseException as error:
                raise _by_code(error.code, error.message) from error
            with contextlib.suppress(SMTPException, OSError, TimeoutError):
                await client.quit(timeout=self._timeout)  # the message is accepted: a rude goodbye changes nothing
            return SubmitResult(accepted=tuple(accepted), refused=refused, code=code, text=text)
        finally:
            client.close()

    async def close(self) -> None:
        """QUIT and close, unused."""
        with contextlib.suppress(SMTPException, OSError, TimeoutError):
            await self._client.quit(timeout=self._timeout)
        self._client.close()


async def open_session(endpoint: SmtpEndpoint, *, timeout: float = 60.0) -> Session:
    """Connect (TLS or STARTTLS, verified), EHLO and log in: everything before the first byte of a message, so
    any failure here is SmtpTransient, SmtpTlsFailed, SmtpAuthFailed or a refusal by code. `timeout` bounds
    each network step."""
    client = _client(endpoint, timeout)
    await _connect(client, endpoint)
    try:
        await _login(client, endpoint)
    except (SMTPServerDisconnected, SMTPTimeoutError, OSError) as error:
        client.close()
        raise SmtpTransient(f"connection lost during the login: {error}") from error
    except BaseException:
        client.close()
        raise
    return Session(client, timeout)


async def submit(
    endpoint: SmtpEndpoint,
    envelope_from: str,
    recipients: Sequence[str],
    message: bytes,
    *,
    timeout: float = 60.0,
    final_timeout: float = 600.0,
) -> SubmitResult:
    """`open_session`, then `Session.send`: one message, one connection (`timeout` bounds each network step)."""
    if not recipients:
        raise ValueError("no recipients")
    session = await open_session(endpoint, timeout=timeout)
    return await session.send(envelope_from, recipients, message, final_timeout=final_timeout)
