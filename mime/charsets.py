"""MIME charset labels -> Python codecs, and bytes -> text that never fails."""

from __future__ import annotations

import codecs

from .defects import CHARSET_MISMATCH, UNKNOWN_CHARSET

__all__ = ["codec_for", "decode_bytes"]

# Labels seen in the wild that Python spells differently or that a superset decodes better.
_CHARSET_ALIASES = {
    "unknown-8bit": "",
    "x-unknown": "",
    "unknown": "",
    "default": "",
    "us-ascii": "",  # 8-bit bytes under an ASCII label mean the label is wrong: guess instead
    "ascii": "",
    "ansi_x3.4-1968": "",
    "utf8": "utf-8",
    "x-utf8": "utf-8",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "iso-8859-8-i": "iso-8859-8",
    "windows-874": "cp874",
    "x-sjis": "shift_jis",
    "shift-jis": "shift_jis",
    "iso-8859-1": "cp1252",  # RFC 5322 era mailers label cp1252 text as latin-1 (WHATWG does too)
    "latin1": "cp1252",
    "latin-1": "cp1252",
}
# Codecs that are text encodings to Python but not charsets (or that reinterpret the text).
_REFUSED_CODECS = frozenset({"undefined", "unicode_escape", "raw_unicode_escape", "mbcs", "oem"})
_codec_cache: dict[str, str | None] = {}


def codec_for(charset: str) -> str | None:
    """The Python codec name for a MIME charset label, "" for 'guess', None for unknown."""
    try:
        return _codec_cache[charset]
    except KeyError:
        pass
    label = charset.strip().strip("\"'").lower()
    label = label.split("*", 1)[0]  # RFC 2231 language suffix: utf-8*en
    name: str | None = _CHARSET_ALIASES.get(label)
    if name is None:
        try:
            name = codecs.lookup(label).name
        except (LookupError, ValueError):
            name = None
        if name in _REFUSED_CODECS:
            name = None
    if len(_codec_cache) < 512:
        _codec_cache[charset] = name
    return name


def decode_bytes(data: bytes, charset: str | None, defects: list[str] | None = None) -> str:
    """Declared charset, then UTF-8, then cp1252 with replacement: never raises."""
    codec = codec_for(charset) if charset else ""
    if codec is None and defects is not None:
        defects.append(UNKNOWN_CHARSET)
    if data.isascii():
        return data.decode("ascii")
    if codec:
        try:
            return data.decode(codec)
        except (UnicodeDecodeError, LookupError):
            if defects is not None:
                defects.append(CHARSET_MISMATCH)
    if codec != "utf-8":
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
    if codec and codec not in ("utf-8", "cp1252"):
        # Mostly right in its own charset beats wholly wrong in cp1252.
        try:
            return data.decode(codec, errors="replace")
        except LookupError:
            pass
    return data.decode("cp1252", errors="replace")
