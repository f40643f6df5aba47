"""Subjects: is this a reply, and what do two messages of one thread share."""

from __future__ import annotations

import re

from .headers import collapse

__all__ = ["is_reply", "normalize_subject"]

# RFC 5322 §3.6.5 "Re: ", plus what localized clients write (AW: German, SV: Nordic, ...), counted
# forms (Re[2]:, Re(2):, Re^2:) and mailing-list tags ([list-name]).
_REPLY_PREFIX = (
    r"(?:re|fwd?|aw|sv|vs|wg|antw|antwort|tr|rif|odp|res|enc|ynt|atb|vl)\s*(?:\[\d+\]|\(\d+\)|\^\d+)?\s*[:\uff1a]"
)
_SUBJECT_PREFIX = re.compile(rf"^(?:{_REPLY_PREFIX}|\[[^\]]*\])\s*", re.I)
# A reply or forward, perhaps behind list tags: "[list] Re: ...".
_IS_REPLY = re.compile(rf"^\s*(?:\[[^\]]*\]\s*)*{_REPLY_PREFIX}", re.I)
_SUBJECT_SUFFIX = re.compile(r"\s*\((?:fwd|fw)\)$", re.I)


def is_reply(subject: str) -> bool:
    """Whether a subject says it answers or forwards another message (Re:, AW:, Fwd:, ...)."""
    return _IS_REPLY.match(subject) is not None


def normalize_subject(subject: str) -> str:
    """The subject two messages of one thread share, for the subject-only threading fallback."""
    text = collapse(subject)
    while True:
        stripped = _SUBJECT_PREFIX.sub("", text, count=1)
        stripped = _SUBJECT_SUFFIX.sub("", stripped)
        if stripped == text:
            break
        text = stripped
    return (text or collapse(subject)).casefold()
