"""Errors raised by the SMTP submission client.

Every error derives from `SmtpError`; what a caller does next depends on the branch::

    SmtpError
    ├── SmtpTransient        try again later: a 4xx reply, or the connection was refused, dropped or timed out
    │                        before the server had the message (before DATA's 354, or at any earlier step)
    ├── SmtpPermanent        a 5xx reply (`code`, `text`): resending the same message will fail the same way
    │   ├── SmtpAuthFailed   AUTH refused with 5xx, or the server offers no AUTH mechanism we speak
    │   └── SmtpTlsFailed    TLS could not be set up: certificate not verified, STARTTLS not offered, handshake
    └── SmtpUncertain        the payload was sent, then the connection broke or timed out before the final reply:
                             the server may have accepted (and delivered) it. Never resend blindly: report it.

`refused` carries the recipients the server turned down (address -> (code, text)) when that is why a call failed;
a submission that some recipients accepted succeeds and lists the others in `SubmitResult.refused` instead.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["SmtpAuthFailed", "SmtpError", "SmtpPermanent", "SmtpTlsFailed", "SmtpTransient", "SmtpUncertain"]


class SmtpError(Exception):
    """Base class of every error raised by `synccore.smtp`."""

    def __init__(
        self, text: str, *, code: int | None = None, refused: Mapping[str, tuple[int, str]] | None = None
    ) -> None:
        super().__init__(f"{code} {text}" if code is not None else text)
        self.code = code
        self.text = text
        self.refused: Mapping[str, tuple[int, str]] = dict(refused or {})


class SmtpTransient(SmtpError):
    """A 4xx reply, or no connection (refused, dropped, timed out) before the server had the message."""


class SmtpPermanent(SmtpError):
    """A 5xx reply: the same message to the same server will fail again."""


class SmtpAuthFailed(SmtpPermanent):
    """The credentials were refused, or the server offers no mechanism we speak."""


class SmtpTlsFailed(SmtpPermanent):
    """TLS could not be set up: the certificate did not verify, STARTTLS was not offered, or the handshake failed."""


class SmtpUncertain(SmtpError):
    """The message was sent but the final reply never came: it may have been accepted. Do not resend blindly."""
