"""MIME for inboxql: read the mail the mirror fetches. Stdlib only, no imports from the rest of inboxql.

Reading never raises and is fast (see `parse`); the modules, from the bottom up:

    defects    defect names: the stdlib's class names, our own for the rest, and which ones make a message malformed
    charsets   MIME charset labels -> Python codecs; bytes -> text that never fails
    headers    header field values: RFC 2047 encoded-words, addresses, message ids, dates (`Address`)
    entity     the MIME tree split from raw bytes: header blocks, multipart bodies, RFC 2231 parameters,
               transfer decoding, IMAP part numbering
    html       html mail -> readable text
    snippets   the preview line of a message's text
    subjects   reply prefixes and the normalized subject used to thread by subject
    parse      `parse_message` (raw bytes -> `ParsedMessage`) and `extract_part` (one part's bytes by IMAP section)

What this package exports below is its public face; the modules' own names are for each other and for tests.
"""

from .headers import Address, decode_words
from .html import html_to_text
from .parse import AttachmentInfo, ParsedMessage, extract_part, parse_message
from .subjects import is_reply, normalize_subject

__all__ = [
    "Address",
    "AttachmentInfo",
    "ParsedMessage",
    "decode_words",
    "extract_part",
    "html_to_text",
    "is_reply",
    "normalize_subject",
    "parse_message",
]
