"""The short preview of a message's text that lists show."""

from __future__ import annotations

from .headers import collapse

__all__ = ["SNIPPET_LENGTH", "make_snippet"]

SNIPPET_LENGTH = 200
_ATTRIBUTION_ENDINGS = ("wrote:", "schrieb:", "écrit :", "écrit:", "escribió:", "scritto:")


def make_snippet(text: str) -> str:
    """The first lines of new text (quotes, attributions and the signature skipped), cut at a word."""
    kept: list[str] = []
    length = 0
    for line in text[:4000].splitlines():
        if line in ("-- ", "--", "__"):  # RFC 3676 §4.3 signature separator
            break
        stripped = line.strip()
        if not stripped or stripped[0] == ">" or stripped.endswith(_ATTRIBUTION_ENDINGS):
            continue
        kept.append(stripped)
        length += len(stripped)
        if length > SNIPPET_LENGTH:
            break
    snippet = collapse(" ".join(kept)) or collapse(text[:2000])
    if len(snippet) > SNIPPET_LENGTH:
        cut = snippet[:SNIPPET_LENGTH]
        space = cut.rfind(" ")
        snippet = cut[:space] if space > SNIPPET_LENGTH * 3 // 4 else cut
    return snippet
