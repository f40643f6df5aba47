"""Defect names: the stdlib's class names where it has one, our own for the rest."""

from __future__ import annotations

__all__ = [
    "CHARSET_MISMATCH",
    "HEADER_PARSE_ERROR",
    "MALFORMING_DEFECTS",
    "PART_DECODE_ERROR",
    "UNKNOWN_CHARSET",
    "UNPARSABLE_MESSAGE",
]

# Defects that mean the MIME structure itself cannot be trusted (the rest, such as a stray non-ASCII
# byte in a header, are noted in `defects` but do not make a message "malformed").
MALFORMING_DEFECTS = frozenset(
    {
        "StartBoundaryNotFoundDefect",
        "CloseBoundaryNotFoundDefect",
        "FirstHeaderLineIsContinuationDefect",
        "MisplacedEnvelopeHeaderDefect",
        "MissingHeaderBodySeparatorDefect",
        "MultipartInvariantViolationDefect",
        "NoBoundaryInMultipartDefect",
        "InvalidMultipartContentTransferEncodingDefect",
        "InvalidBase64PaddingDefect",
        "InvalidBase64CharactersDefect",
        "InvalidBase64LengthDefect",
        "HeaderParseError",
        "PartDecodeError",
        "UnparsableMessage",
    }
)

# Our own defect names (next to the stdlib's class names).
UNKNOWN_CHARSET = "UnknownCharset"  # declared charset has no codec: decoded by fallback
CHARSET_MISMATCH = "CharsetMismatch"  # bytes are not valid in the declared charset
HEADER_PARSE_ERROR = "HeaderParseError"
PART_DECODE_ERROR = "PartDecodeError"
UNPARSABLE_MESSAGE = "UnparsableMessage"
