"""MIME for inboxql: parse what the mirror fetches. Stdlib only, no imports from the rest of inboxql."""

from .parse import (
    Address,
    AttachmentInfo,
    ParsedMessage,
    decode_words,
    extract_part,
    html_to_text,
    is_reply,
    normalize_subject,
    parse_message,
)

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
