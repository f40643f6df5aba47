"""UID and sequence sets (RFC 3501 §9 `sequence-set`): `"1:3,7,9:12"` <-> sorted integers."""

from __future__ import annotations

from collections.abc import Iterable


def parse_uid_set(text: str | bytes, *, star: int | None = None) -> list[int]:
    """Expand a set into sorted, de-duplicated integers.

    `*` means the largest number in use (RFC 3501 §9); it needs `star`, else ValueError.
    Ranges may be written high-to-low (`5:3`).
    """
    raw = text.decode("ascii") if isinstance(text, bytes) else text
    if not raw:
        return []
    seen: set[int] = set()
    for part in raw.split(","):
        lo_text, sep, hi_text = part.partition(":")
        lo = _number(lo_text, star)
        if not sep:
            seen.add(lo)
            continue
        hi = _number(hi_text, star)
        if lo > hi:
            lo, hi = hi, lo
        seen.update(range(lo, hi + 1))
    return sorted(seen)


def _number(text: str, star: int | None) -> int:
    if text == "*":
        if star is None:
            raise ValueError("'*' in a set needs the largest number in use")
        return star
    if not text.isdigit():
        raise ValueError(f"not a set number: {text!r}")
    value = int(text)
    if value == 0:
        raise ValueError("0 is not a valid UID or sequence number")  # RFC 3501 §9: nz-number
    return value


def format_uid_set(numbers: Iterable[int]) -> str:
    """Compress integers into the shortest range form: `[1, 2, 3, 7]` -> `"1:3,7"`."""
    ordered = sorted(set(numbers))
    if not ordered:
        raise ValueError("an empty set cannot be written in IMAP")
    parts: list[str] = []
    start = prev = ordered[0]
    for n in ordered[1:]:
        if n == prev + 1:
            prev = n
            continue
        parts.append(f"{start}:{prev}" if prev != start else str(start))
        start = prev = n
    parts.append(f"{start}:{prev}" if prev != start else str(start))
    return ",".join(parts)
