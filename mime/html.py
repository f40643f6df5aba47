"""html mail -> readable text."""

from __future__ import annotations

import html
import re

__all__ = ["html_to_text"]

# Hostile html must not make these quadratic: a tag ends at the next "<" if no ">" comes first, and
# invisible blocks are cut by _drop_invisible with str.find rather than by a lazy regex.
_HTML_INVISIBLE = re.compile(r"<!--|<(script|style|head|title)\b", re.I)
_HTML_BREAK = re.compile(r"<\s*/?\s*(?:br|p|div|tr|li|h[1-6]|table|hr|blockquote|pre|ul|ol)\b[^<>]*>", re.I)
_HTML_TAG = re.compile(r"<[^<>]*>")
_HORIZONTAL_SPACE = re.compile(r"[ \t\f\v\xa0\u200b]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def _drop_invisible(markup: str) -> str:
    """Cut comments, scripts, styles and the head; an unclosed one runs to the end."""
    lowered = markup.lower()
    kept: list[str] = []
    position = 0
    while True:
        found = _HTML_INVISIBLE.search(markup, position)
        if found is None:
            break
        kept.append(markup[position : found.start()])
        closing = "-->" if found.group(1) is None else f"</{found.group(1).lower()}"
        end = lowered.find(closing, found.end())
        if end < 0:
            return "".join(kept)
        close = markup.find(">", end)
        position = len(markup) if close < 0 else close + 1
    kept.append(markup[position:])
    return "".join(kept)


def html_to_text(markup: str) -> str:
    """Readable text from html mail (block elements become line breaks); not a renderer."""
    text = _drop_invisible(markup)
    text = _HTML_BREAK.sub("\n", text)
    text = html.unescape(_HTML_TAG.sub("", text))
    text = _HORIZONTAL_SPACE.sub(" ", text)
    text = "\n".join(line.strip() for line in text.splitlines())
    return _BLANK_LINES.sub("\n\n", text).strip()
