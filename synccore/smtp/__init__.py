"""An SMTP submission client: protocol only, no database, no imports from the rest of inboxql.

`endpoint` says where to submit (`SmtpEndpoint`, `parse_smtp_url`); `client.submit` hands one message over and
classifies every failure by what it means for a retry (`errors` draws the tree: transient, permanent, uncertain).
"""

from .client import SubmitResult, check_login, submit, tls_context
from .endpoint import Security, SmtpEndpoint, parse_smtp_url
from .errors import SmtpAuthFailed, SmtpError, SmtpPermanent, SmtpTlsFailed, SmtpTransient, SmtpUncertain

__all__ = [
    "Security",
    "SmtpAuthFailed",
    "SmtpEndpoint",
    "SmtpError",
    "SmtpPermanent",
    "SmtpTlsFailed",
    "SmtpTransient",
    "SmtpUncertain",
    "SubmitResult",
    "check_login",
    "parse_smtp_url",
    "submit",
    "tls_context",
]
