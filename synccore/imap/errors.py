"""Errors raised by the IMAP client.

Every error the package raises derives from `ImapError`, so a caller can catch one class::

    ImapError
    ├── ConnectionLost         the socket closed or broke; every pending command fails with it
    ├── ImapTimeout            a call did not finish within its timeout (also a TimeoutError)
    ├── ProtocolError          the server sent bytes that are not IMAP; the connection is dropped
    ├── MissingCapability      the server lacks an extension the call needs (e.g. IDLE, UIDPLUS)
    └── CommandFailed          tagged NO or BAD, with the response code and text
        └── AuthenticationFailed   LOGIN or AUTHENTICATE answered NO

`ConnectionLost` and `ImapTimeout` also derive from the builtin `ConnectionError` and `TimeoutError`,
so generic network code that catches those keeps working.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .responses import ResponseCode


class ImapError(Exception):
    """Base class of every error raised by `synccore.imap`."""


class ConnectionLost(ImapError, ConnectionError):
    """The connection closed (EOF, reset, BYE) before the command completed."""


class ImapTimeout(ImapError, TimeoutError):
    """A call timed out: a command after its connection moved no byte for its timeout (the connection is then
    dropped), a connect or IDLE step after its timeout in all."""


class ProtocolError(ImapError):
    """The server sent something that cannot be parsed as an IMAP response."""


class MissingCapability(ImapError):
    """The server does not advertise an extension the call requires."""

    def __init__(self, capability: str, purpose: str = "") -> None:
        self.capability = capability
        super().__init__(f"server lacks {capability}" + (f" (needed for {purpose})" if purpose else ""))


class CommandFailed(ImapError):
    """A command ended with a tagged NO or BAD."""

    def __init__(self, command: str, status: str, text: str, code: ResponseCode | None = None) -> None:
        self.command = command
        self.status = status  # "NO" or "BAD"
        self.text = text
        self.code = code
        shown = f"[{code.name}] " if code is not None else ""
        super().__init__(f"{command} failed: {status} {shown}{text}")


class AuthenticationFailed(CommandFailed):
    """LOGIN or AUTHENTICATE was refused (tagged NO)."""
