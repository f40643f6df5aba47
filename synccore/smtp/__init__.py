"""An SMTP submission client: protocol only, no database, no imports from the rest of inboxql.

`endpoint` says where to submit (`SmtpEndpoint`, `parse_smtp_url`); `client.submit` hands one message over (or
`open_session` logs in first and its `Session.send` hands the message over later) and
classifies every failure by what it means for a retry (`errors` draws the tree: transient, permanent, uncertain).
"""

from .client import Session, SubmitResult, check_login, open_session, submit, tls_context
from .endpoint import Security, SmtpEndpoint, parse_smtp_url
from .errors import SmtpAuthFailed, SmtpError, SmtpPermanent, SmtpTlsFailed, SmtpTransient, SmtpUncertain

__all__ = [
    "Security",
    "Session",
    "SmtpAuthFailed",
    "SmtpEndpoint",
    "SmtpError",
    "SmtpPermanent",
    "SmtpTlsFailed",
    "SmtpTransient",
    "SmtpUncertain",
    "SubmitResult",
    "check_login",
    "open_session",
    "parse_smtp_url",
    "submit",
    "tls_context",
]
