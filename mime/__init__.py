"""MIME for inboxql: read the mail the mirror fetches, write the mail it sends. Stdlib only, no imports from
the rest of inboxql.

Reading never raises and is fast (see `parse`); writing refuses what it cannot send safely (see `compose`).
The modules, from the bottom up:

    defects    defect names: the stdlib's class names, our own for the rest, and which ones make a message malformed
    charsets   MIME charset labels -> Python codecs; bytes -> text that never fails
    headers    header field values: RFC 2047 encoded-words, addresses, message ids, dates (`Address`)
    entity     the MIME tree split from raw bytes: header blocks, multipart bodies, RFC 2231 parameters,
               transfer decoding, IMAP part numbering
    html       html mail -> readable text
    snippets   the preview line of a message's text
    subjects   reply prefixes and the normalized subject used to thread by subject
    parse      `parse_message` (raw bytes -> `ParsedMessage`) and `extract_part` (one part's bytes by IMAP section)
    compose    `compose` (`Draft` -> bytes, with the stdlib's email package), `recipients` for the SMTP envelope,
               `reply_headers` and `reply_subject` for answers; `ComposeError` names the refused field

What this package exports below is its public face; the modules' own names are for each other and for tests.
"""

from .compose import (
    Attachment,
    ComposeError,
    Draft,
    Mailbox,
    compose,
    recipients,
    reply_headers,
    reply_subject,
    validate_address,
)
from .headers import Address, decode_words
from .html import html_to_text
from .parse import AttachmentInfo, ParsedMessage, extract_part, parse_message
from .subjects import is_reply, normalize_subject

__all__ = [
    "Address",
    "Attachment",
    "AttachmentInfo",
    "ComposeError",
    "Draft",
    "Mailbox",
    "ParsedMessage",
    "compose",
    "decode_words",
    "extract_part",
    "html_to_text",
    "is_reply",
    "normalize_subject",
    "parse_message",
    "recipients",
    "reply_headers",
    "reply_subject",
    "validate_address",
]
