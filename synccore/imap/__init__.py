"""An asyncio IMAP4rev1 client: protocol only, no database, no imports from the rest of inboxql.

Bytes become typed values in `parser` (pure functions, framed by `reader`); `client.ImapClient`
drives a connection (`connection.Connection`: pipelining, routing, timeouts). `sasl` builds the OAuth2
mechanisms' messages (XOAUTH2, OAUTHBEARER) that `ImapClient.authenticate_oauth2` sends. See `errors`
for the exception tree.
"""

from . import sasl
from .client import IdleEvents, ImapClient, Security, StoreAction
from .command import Literal, astring, mailbox, quoted
from .connection import MAX_UNSOLICITED, Connection
from .errors import (
    AuthenticationFailed,
    CommandFailed,
    ConnectionLost,
    ImapError,
    ImapTimeout,
    MissingCapability,
    ProtocolError,
)
from .parser import parse_internaldate, parse_response, parse_stream, tokenize
from .reader import MAX_LITERAL, RawResponse, ResponseReader
from .responses import (
    AppendUid,
    Capability,
    Continuation,
    CopyUid,
    Enabled,
    ESearch,
    Exists,
    Expunge,
    FetchItem,
    Flags,
    Mailbox,
    MailboxStatus,
    Recent,
    ResponseCode,
    Search,
    StatusResponse,
    Unknown,
    Untagged,
    Vanished,
)
from .results import FetchResult, SelectedMailbox, StoreResult
from .uidset import format_uid_set, parse_uid_set
from .utf7 import decode_mailbox, encode_mailbox

__all__ = [
    "MAX_LITERAL",
    "MAX_UNSOLICITED",
    "AppendUid",
    "AuthenticationFailed",
    "Capability",
    "CommandFailed",
    "Connection",
    "ConnectionLost",
    "Continuation",
    "CopyUid",
    "ESearch",
    "Enabled",
    "Exists",
    "Expunge",
    "FetchItem",
    "FetchResult",
    "Flags",
    "IdleEvents",
    "ImapClient",
    "ImapError",
    "ImapTimeout",
    "Literal",
    "Mailbox",
    "MailboxStatus",
    "MissingCapability",
    "ProtocolError",
    "RawResponse",
    "Recent",
    "ResponseCode",
    "ResponseReader",
    "Search",
    "Security",
    "SelectedMailbox",
    "StatusResponse",
    "StoreAction",
    "StoreResult",
    "Unknown",
    "Untagged",
    "Vanished",
    "astring",
    "decode_mailbox",
    "encode_mailbox",
    "format_uid_set",
    "mailbox",
    "parse_internaldate",
    "parse_response",
    "parse_stream",
    "parse_uid_set",
    "quoted",
    "sasl",
    "tokenize",
]
