"""Raw RFC 5322 bytes -> the fields the mirror stores.

Shared by the sync core (which parses every fetched message) and the gateway (which pulls attachment
bytes back out of the stored raw message), so it is pure and depends on the stdlib alone.

Two rules shape it:

* **It never raises.** Real mail is broken in every way a parser can imagine: undeclared 8-bit bytes,
  charsets nobody has heard of, boundaries that never close. Whatever comes in, a `ParsedMessage`
  comes out; what went wrong is named in `defects` and, when the structure itself is broken, flagged
  by `malformed`.
* **It is fast.** The parser, not the network, bounds an initial sync. The stdlib's
  `policy.default` parses ~1,200 msg/s and raises on `unknown-8bit`; even `compat32` managed only
  ~3,300-5,300 msg/s on generated ~4 KB mail here (FIELD-NOTES measured 8,900 on another load), as
  its feedparser handles every line in Python. So the MIME tree is split here with `bytes.find`,
  by the feedparser's rules and with its defect names (tests/test_corpus.py checks the decoded
  headers and filenames against `policy.default` on ~360 real messages), and headers and charsets
  are decoded here too: ~8,000-9,000 msg/s on the same mail.

Part ids follow IMAP's section numbering (RFC 3501 §6.4.5), so the gateway can hand a part id to
`extract_part` or straight to `UID FETCH BODY[<part>]`.
"""

from __future__ import annotations

import binascii
import codecs
import html
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from email.message import Message
from email.utils import getaddresses, parsedate_tz, unquote
from urllib.parse import unquote_to_bytes

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


@dataclass(frozen=True, slots=True)
class Address:
    name: str
    address: str


@dataclass(frozen=True, slots=True)
class AttachmentInfo:
    part_id: str
    filename: str | None
    content_type: str
    size: int
    content_id: str | None
    inline: bool


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    subject: str
    from_: tuple[Address, ...]
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    bcc: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    sender: tuple[Address, ...]
    date: datetime | None
    message_id: str | None
    in_reply_to: str | None
    references: tuple[str, ...]
    text_body: str
    html_body: str | None
    snippet: str
    attachments: tuple[AttachmentInfo, ...]
    has_attachments: bool
    malformed: bool
    defects: tuple[str, ...]


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

SNIPPET_LENGTH = 200
_SIGNATURE_TYPES = frozenset(
    {"application/pgp-signature", "application/pkcs7-signature", "application/x-pkcs7-signature"}
)
_MAX_DEPTH = 64  # deeper MIME nesting than this is an attack, not mail


# --- charsets -------------------------------------------------------------------------------------

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


def _codec_for(charset: str) -> str | None:
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


def _decode_bytes(data: bytes, charset: str | None, defects: list[str] | None = None) -> str:
    """Declared charset, then UTF-8, then cp1252 with replacement: never raises."""
    codec = _codec_for(charset) if charset else ""
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


# --- headers --------------------------------------------------------------------------------------

_FOLD = re.compile(r"\r?\n|\r")
# RFC 2047 §2 encoded-word. Like the stdlib's lenient parser, we also decode words that touch
# surrounding text and Q words holding spaces (both are common in real mail).
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([qQbB])\?([^?]*)\?=")
_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")


def _raw_to_text(value: str) -> str:
    """A raw header value (bytes as latin-1 text, so undeclared 8-bit is kept) -> unfolded text."""
    if not value.isascii():
        value = _decode_bytes(value.encode("latin-1", "replace"), None)
    if "\n" in value or "\r" in value:
        value = _FOLD.sub("", value)
    if "\x00" in value:
        value = value.replace("\x00", "")
    return value


def _decode_encoded_word(encoding: str, text: str) -> bytes | None:
    data = text.encode("utf-8")
    try:
        if encoding in "qQ":
            return binascii.a2b_qp(data, header=True)
        data = _B64_JUNK.sub(b"", data)
        rest = len(data) % 4
        if rest == 1:
            data = data[:-1]
        elif rest:
            data += b"=" * (4 - rest)
        return binascii.a2b_base64(data)
    except (binascii.Error, ValueError):
        return None


def decode_words(value: str) -> str:
    """Decode RFC 2047 encoded-words in unfolded header text.

    Whitespace between adjacent encoded-words is dropped (§6.2), and adjacent words in one charset
    are decoded together, so a multi-byte character split across two words survives.
    """
    if "=?" not in value:
        return value
    out: list[str] = []
    pending = b""
    pending_charset = ""
    in_word = False  # the last thing emitted was an encoded-word (its bytes are in `pending`)
    pos = 0
    for m in _ENCODED_WORD.finditer(value):
        data = _decode_encoded_word(m.group(2), m.group(3))
        if data is None:
            continue  # not decodable: stays in the text as it stands
        charset = m.group(1).lower()
        between = value[pos : m.start()]
        adjacent = in_word and (not between or between.isspace())
        if adjacent and charset == pending_charset:
            pending += data
        else:
            if in_word:
                out.append(_decode_bytes(pending, pending_charset))
            if not adjacent:
                out.append(between)
            pending, pending_charset = data, charset
        in_word = True
        pos = m.end()
    if in_word:
        out.append(_decode_bytes(pending, pending_charset))
    out.append(value[pos:])
    return "".join(out)


def _collapse(value: str) -> str:
    return " ".join(value.split())


def _decode_text_header(raw: str) -> str:
    return _collapse(decode_words(_raw_to_text(raw)))


# No two neighbouring parts can match the same characters, so a hostile header cannot make the
# regex backtrack (it stays linear).
_PLAIN_MAILBOX = re.compile(r"(?:([^<>@]*)<([^<>@\s]+@[^<>@\s]+)>|\s*([^<>@\s]+@[^<>@\s]+))\s*")
_ADDRESS_SPECIALS = frozenset('"():;\\[]')


def _plain_addresses(value: str) -> list[tuple[str, str]] | None:
    """The common forms (`Name <a@b>`, `a@b`), or None: getaddresses() is 3x slower."""
    if not _ADDRESS_SPECIALS.isdisjoint(value):
        return None
    pairs = []
    for item in value.split(","):
        if not item or item.isspace():
            continue
        found = _PLAIN_MAILBOX.fullmatch(item)
        if found is None:
            return None
        name, angled, bare = found.groups()
        pairs.append((" ".join(name.split()), angled) if angled else ("", bare))
    return pairs


def _addresses(raws: list[str]) -> tuple[Address, ...]:
    if not raws:
        return ()
    # Structure first, RFC 2047 second: a decoded name may hold commas or angle brackets.
    pairs: list[tuple[str, str]] = []
    for raw in raws:
        value = _raw_to_text(raw)
        fast = _plain_addresses(value)
        pairs.extend(fast if fast is not None else getaddresses([value]))
    result: list[Address] = []
    for name, address in pairs:
        name = _collapse(decode_words(name)) if name else ""
        address = "".join(address.split())
        if name or address:
            result.append(Address(name, address))
    return tuple(result)


_MSG_ID = re.compile(r"<([^<>]*)>")


def _msg_ids(raw: str) -> list[str]:
    text = _raw_to_text(raw)
    ids = ["".join(found.split()) for found in _MSG_ID.findall(text)]
    ids = [found for found in ids if found]
    if not ids:  # no brackets at all: bare ids separated by whitespace (seen from old mailers)
        ids = [token.strip("<>,;") for token in text.split() if "@" in token]
    return ids


def _message_id(raw: str | None) -> str | None:
    if raw is None:
        return None
    ids = _msg_ids(raw)
    if ids:
        return ids[0]
    stripped = "".join(_raw_to_text(raw).split()).strip("<>")
    return stripped or None


def _date(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        parts = parsedate_tz(_raw_to_text(raw))
        if parts is None:
            return None
        offset = parts[9] or 0  # RFC 5322 §3.3: -0000 means "no idea": take it as UTC
        zone = timezone(timedelta(seconds=offset))
        return datetime(*parts[:6], tzinfo=zone).astimezone(UTC)
    except (ValueError, OverflowError, TypeError, IndexError):
        return None


# --- bodies ---------------------------------------------------------------------------------------

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


_ATTRIBUTION_ENDINGS = ("wrote:", "schrieb:", "écrit :", "écrit:", "escribió:", "scritto:")


def _snippet(text: str) -> str:
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
    snippet = _collapse(" ".join(kept)) or _collapse(text[:2000])
    if len(snippet) > SNIPPET_LENGTH:
        cut = snippet[:SNIPPET_LENGTH]
        space = cut.rfind(" ")
        snippet = cut[:space] if space > SNIPPET_LENGTH * 3 // 4 else cut
    return snippet


# --- the MIME tree --------------------------------------------------------------------------------
# Our own splitter: the stdlib's feedparser handles every line in Python and compiles a regex per
# boundary, which made it ~4,100 msg/s on generated ~4 KB mail here. This one splits on whole
# blocks with bytes.find and keeps the stdlib's rules (and defect names) for where headers end and
# which lines are boundaries, so both see the same tree.

_ENCAPSULATED = frozenset({"message/rfc822", "message/global"})
_HEADER_NAME = re.compile(r"[!-9;-~]*:")  # the feedparser's headerRE, less its "From " case
_UNFOLDED = re.compile(r"\r?\n(?![ \t])")  # line breaks that end a header field
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_WHITESPACE = b" \t\r\n\x0b\x0c"


@dataclass(slots=True)
class _Entity:
    """One MIME entity: its header fields (names lowercased, values as latin-1 text) and body."""

    headers: list[tuple[str, str]]
    body: bytes
    content_type: str
    params: dict[str, str]
    children: list[_Entity]
    defects: list[str]

    def get(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


def _header_block(data: bytes) -> tuple[bytes, bytes]:
    """Split at the first empty line (bytes.find: a regex search here cost a third of a parse)."""
    crlf = data.find(b"\n\r\n")
    lf = data.find(b"\n\n", 0, len(data) if crlf < 0 else crlf)
    if lf < 0 and crlf < 0:
        return data, b""
    if crlf < 0 or 0 <= lf < crlf:
        end, after = lf, lf + 2
    else:
        end, after = crlf, crlf + 3
    if end > 0 and data[end - 1] == 0x0D:
        end -= 1
    return data[:end], data[after:]


def _split_headers(data: bytes, defects: list[str]) -> tuple[list[tuple[str, str]], bytes]:
    if data[:1] in (b"\n", b"\r"):  # no header fields at all
        return [], data[2:] if data.startswith(b"\r\n") else data[1:]
    block, body = _header_block(data)
    fields = []
    for field in _UNFOLDED.split(block.decode("latin-1")):
        name, colon, value = field.partition(":")
        if not colon or not _HEADER_NAME.match(field) or not name or field.startswith("From "):
            return _split_headers_slowly(data, block, body, defects)
        fields.append((name.lower(), value.lstrip(" \t")))
    return fields, body


def _split_headers_slowly(
    data: bytes, block: bytes, body: bytes, defects: list[str]
) -> tuple[list[tuple[str, str]], bytes]:
    """Line by line, for header blocks with something odd in them (the feedparser's rules)."""
    fields: list[list[str]] = []
    offset = 0
    # bytes.splitlines: only CR and LF end a line (str.splitlines would also split at \x85, which
    # is a cp1252 ellipsis in an undeclared 8-bit header).
    for index, raw_line in enumerate(block.splitlines(keepends=True)):
        line = raw_line.decode("latin-1")
        start, offset = offset, offset + len(line)
        if line[0] in " \t":
            if fields:
                fields[-1].append(line)
            else:
                defects.append("FirstHeaderLineIsContinuationDefect")
            continue
        if line.startswith("From "):
            if index:
                defects.append("MisplacedEnvelopeHeaderDefect")
            continue  # RFC 4155 envelope line: not a header field
        if not _HEADER_NAME.match(line) or line[0] == ":":
            # RFC 5322 §2.2: a field needs a name and a colon. Like the stdlib, take this line as
            # the start of the body.
            defects.append("MissingHeaderBodySeparatorDefect")
            body = data[start:]
            break
        fields.append([line])
    result = []
    for lines in fields:
        name, value = lines[0].split(":", 1)
        value = value.lstrip(" \t") + "".join(lines[1:])
        result.append((name.lower(), value.rstrip("\r\n")))
    return result, body


def _split_params(value: str) -> list[str]:
    """Split at semicolons outside quoted strings (a loop: a regex lookahead was quadratic)."""
    items: list[str] = []
    start = 0
    quoted = escaped = False
    for index, char in enumerate(value):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ";" and not quoted:
            items.append(value[start:index])
            start = index + 1
    items.append(value[start:])
    return items


def _params(value: str) -> dict[str, str]:
    """MIME parameters (RFC 2045 §5.1), RFC 2231 continuations joined and decoded."""
    params: dict[str, str] = {}
    extended: dict[str, list[tuple[int, bool, str]]] = {}
    items = _split_params(value) if '"' in value else value.split(";")
    for item in items[1:]:
        name, sep, raw = item.partition("=")
        if not sep:
            continue
        name = name.strip().lower()
        raw = raw.strip()
        if len(raw) > 1 and raw[0] == '"':
            raw = unquote(raw)
        if "*" not in name:
            params.setdefault(name, raw)
            continue
        base, _, section = name.partition("*")
        encoded = section.endswith("*") or section == ""
        number = section.rstrip("*")
        extended.setdefault(base, []).append((int(number) if number.isdigit() else 0, encoded, raw))
    for base, pieces in extended.items():
        params[base] = _rfc2231(sorted(pieces, key=lambda piece: piece[0]))
    return params


def _rfc2231(pieces: list[tuple[int, bool, str]]) -> str:
    charset = ""
    data = bytearray()
    for index, (_number, encoded, text) in enumerate(pieces):
        if encoded:
            if index == 0 and text.count("'") >= 2:
                charset, _language, text = text.split("'", 2)
            data += unquote_to_bytes(text)
        else:
            data += text.encode("latin-1")
    return _decode_bytes(bytes(data), charset or None)


def _content_type(headers: list[tuple[str, str]], default: str) -> tuple[str, dict[str, str]]:
    for key, value in headers:
        if key == "content-type":
            kind = value.split(";", 1)[0].strip().lower()
            # The stdlib's get_content_type(): an unreadable type is text/plain.
            if kind.count("/") != 1:
                kind = "text/plain"
            return "".join(kind.split()), _params(value) if ";" in value else {}
    return default, {}


def _parse_entity(data: bytes, default_type: str, depth: int) -> _Entity:
    defects: list[str] = []
    headers, body = _split_headers(data, defects)
    content_type, params = _content_type(headers, default_type)
    entity = _Entity(headers, body, content_type, params, [], defects)
    if depth >= _MAX_DEPTH:
        return entity
    if content_type.startswith("multipart/"):
        boundary = params.get("boundary", "").rstrip()
        parts = _split_multipart(body, boundary.encode("latin-1"), defects) if boundary else None
        if parts is None:
            if not boundary:
                defects.append("NoBoundaryInMultipartDefect")
            if depth == 0:  # as the stdlib reports it: the root claims multipart but is not
                defects.append("MultipartInvariantViolationDefect")
            return entity
        child_type = "message/rfc822" if content_type == "multipart/digest" else "text/plain"
        entity.children = [_parse_entity(part, child_type, depth + 1) for part in parts]
    elif content_type in _ENCAPSULATED:
        inner = _transfer_decode(entity, [])
        if inner.strip():
            entity.children = [_parse_entity(inner, "text/plain", depth + 1)]
    return entity


def _split_multipart(body: bytes, boundary: bytes, defects: list[str]) -> list[bytes] | None:
    """Body parts between RFC 2046 §5.1.1 delimiter lines ("--" boundary, optional "--",
    optional spaces, end of line); the line break before a delimiter belongs to the delimiter."""
    marker = b"--" + boundary
    parts: list[bytes] = []
    start: int | None = None  # where the current part's content begins
    position = 0
    closed = False
    while True:
        found = body.find(marker, position)
        if found < 0:
            break
        position = found + 1
        if found and body[found - 1] not in b"\r\n":
            continue
        after = found + len(marker)
        closing = body.startswith(b"--", after)
        end = after + 2 if closing else after
        while end < len(body) and body[end] in b" \t":
            end += 1
        if end < len(body) and body[end] not in b"\r\n":
            continue  # "--boundary" followed by text: just a line in the content
        end += 2 if body.startswith(b"\r\n", end) else 1
        if closing and start is None:
            break  # a close delimiter before any opening one
        if start is not None:
            cut = found
            if cut > start and body[cut - 1] == 0x0A:
                cut -= 1
            if cut > start and body[cut - 1] == 0x0D:
                cut -= 1
            parts.append(body[start:cut])
        start = end
        position = end
        if closing:
            closed = True
            break
    if start is None:
        defects.append("StartBoundaryNotFoundDefect")
        return None
    if not closed:
        defects.append("CloseBoundaryNotFoundDefect")
        parts.append(body[start:])
    return parts


def _decode_base64(data: bytes, defects: list[str]) -> bytes:
    compact = data.translate(None, _WHITESPACE)
    stray = compact.translate(None, _B64_ALPHABET)
    if stray.strip(b"=") or compact.rstrip(b"=").count(b"=") or len(compact) % 4:
        if stray.strip(b"="):
            defects.append("InvalidBase64CharactersDefect")
        compact = compact.translate(None, stray.replace(b"=", b""))
        compact = compact.rstrip(b"=")
        rest = len(compact) % 4
        if rest == 1:
            defects.append("InvalidBase64LengthDefect")
            compact = compact[:-1]
        elif rest:
            defects.append("InvalidBase64PaddingDefect")
            compact += b"=" * (4 - rest)
    try:
        return binascii.a2b_base64(compact)
    except (binascii.Error, ValueError):
        defects.append("InvalidBase64CharactersDefect")
        return b""


def _transfer_decode(entity: _Entity, defects: list[str]) -> bytes:
    encoding = (entity.get("content-transfer-encoding") or "").strip().lower()
    body = entity.body
    if encoding == "base64":
        return _decode_base64(body, defects)
    if encoding == "quoted-printable":
        return binascii.a2b_qp(body)
    if encoding in ("x-uuencode", "uuencode", "uue", "x-uue"):
        legacy = Message()
        legacy["Content-Transfer-Encoding"] = encoding
        legacy.set_payload(body.decode("ascii", "surrogateescape"))
        decoded = legacy.get_payload(decode=True)
        return decoded if isinstance(decoded, bytes) else body
    return body


def _param_text(value: str) -> str:
    return decode_words(_raw_to_text(value))


def _filename(entity: _Entity) -> str | None:
    name: str | None = None
    disposition = entity.get("content-disposition")
    if disposition is not None and ";" in disposition:
        name = _params(disposition).get("filename")
    if not name:
        name = entity.params.get("name")
    if name is None:
        return None
    return _collapse(_param_text(name)) or None


def _disposition(entity: _Entity) -> str:
    value = entity.get("content-disposition")
    return value.split(";", 1)[0].strip().lower() if value else ""


def _entity_parts(entity: _Entity, top: bool) -> list[_Entity]:
    """IMAP's view of an entity's sub-parts (RFC 3501 §6.4.5): a top-level or encapsulated
    message that is not multipart has its body as part 1."""
    if entity.content_type.startswith("multipart/") and entity.children:
        return entity.children
    if top:
        return [entity]
    if entity.content_type in _ENCAPSULATED and entity.children:
        return _entity_parts(entity.children[0], top=True)
    return []


def _tree_defects(root: _Entity) -> list[str]:
    defects: list[str] = []
    stack = [root]
    while stack:
        entity = stack.pop()
        defects.extend(entity.defects)
        stack.extend(reversed(entity.children))
    return defects


@dataclass(slots=True)
class _Walk:
    texts: list[str]
    htmls: list[str]
    attachments: list[AttachmentInfo]
    defects: list[str]
    attached_messages: list[_Entity]


def _walk(root: _Entity, walk: _Walk) -> None:
    # Iterative so that hostile nesting cannot exhaust the stack.
    stack: list[tuple[_Entity, str, bool]] = [
        (part, str(index), False) for index, part in enumerate(_entity_parts(root, True), 1)
    ]
    stack.reverse()
    while stack:
        entity, part_id, encapsulated = stack.pop()
        is_multipart = entity.content_type.startswith("multipart/")
        if not encapsulated and not (is_multipart and entity.children):
            try:
                _leaf(entity, part_id, walk)
            except Exception:
                walk.defects.append(PART_DECODE_ERROR)
        # Below an attached message, only the defects concern us.
        inside = encapsulated or not is_multipart
        children = _entity_parts(entity, top=False)
        stack.extend((children[index - 1], f"{part_id}.{index}", inside) for index in range(len(children), 0, -1))


def _leaf(entity: _Entity, part_id: str, walk: _Walk) -> None:
    content_type = entity.content_type
    is_multipart = content_type.startswith("multipart/")
    if is_multipart:
        content_type = "text/plain"  # a multipart we could not split: show its text
    disposition = _disposition(entity)
    filename = _filename(entity)
    data = entity.body if is_multipart else _transfer_decode(entity, walk.defects)
    if content_type in ("text/plain", "text/html") and disposition != "attachment" and filename is None:
        text = _decode_bytes(data, entity.params.get("charset"), walk.defects)
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        if "\x00" in text:
            text = text.replace("\x00", "")
        (walk.texts if content_type == "text/plain" else walk.htmls).append(text)
        return
    if content_type in _ENCAPSULATED and entity.children:
        walk.attached_messages.append(entity.children[0])
    raw_id = entity.get("content-id")
    content_id = _message_id(raw_id) if raw_id is not None else None
    walk.attachments.append(
        AttachmentInfo(
            part_id=part_id,
            filename=filename,
            content_type=content_type,
            size=len(data),
            content_id=content_id,
            inline=disposition == "inline" or (not disposition and content_id is not None),
        )
    )


# --- the public functions -------------------------------------------------------------------------

_SINGLE_HEADERS = frozenset({"subject", "date", "message-id", "in-reply-to"})
_LIST_HEADERS = frozenset({"from", "to", "cc", "bcc", "reply-to", "sender", "references"})


def _headers(entity: _Entity) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    for key, value in entity.headers:
        if key in _SINGLE_HEADERS or key in _LIST_HEADERS:
            headers.setdefault(key, []).append(value)
    return headers


class _Headers:
    """Decodes one header at a time, turning any failure into a defect and a default."""

    def __init__(self, raw: dict[str, list[str]], defects: list[str]) -> None:
        self.raw = raw
        self.defects = defects

    def first(self, name: str) -> str | None:
        values = self.raw.get(name)
        return values[0] if values else None

    def subject(self) -> str:
        value = self.first("subject")
        if value is None:
            return ""
        try:
            return _decode_text_header(value)
        except Exception:
            self.defects.append(HEADER_PARSE_ERROR)
            return _collapse(value.encode("utf-8", "replace").decode("utf-8"))

    def addresses(self, name: str) -> tuple[Address, ...]:
        try:
            return _addresses(self.raw.get(name, []))
        except Exception:
            self.defects.append(HEADER_PARSE_ERROR)
            return ()

    def msg_id(self, name: str) -> str | None:
        try:
            return _message_id(self.first(name))
        except Exception:
            self.defects.append(HEADER_PARSE_ERROR)
            return None

    def references(self) -> tuple[str, ...]:
        try:
            ids: list[str] = []
            for value in self.raw.get("references", []):
                ids.extend(_msg_ids(value))
            return tuple(dict.fromkeys(ids))
        except Exception:
            self.defects.append(HEADER_PARSE_ERROR)
            return ()

    def date(self) -> datetime | None:
        try:
            return _date(self.first("date"))
        except Exception:
            self.defects.append(HEADER_PARSE_ERROR)
            return None


def _join_texts(texts: list[str]) -> str:
    if len(texts) == 1:
        return texts[0]
    return "\n".join(text if text.endswith("\n") else text + "\n" for text in texts if text)


def _parse(raw: bytes) -> ParsedMessage:
    root = _parse_entity(raw, "text/plain", 0)
    defects = _tree_defects(root)
    walk = _Walk([], [], [], defects, [])
    _walk(root, walk)
    if not walk.texts and not walk.htmls and walk.attached_messages:
        # Nothing but a forwarded message (some clients forward so): show its text.
        inner = _Walk([], [], [], [], [])
        _walk(walk.attached_messages[0], inner)
        walk.texts, walk.htmls = inner.texts, inner.htmls
    html_body = "\n".join(walk.htmls) if walk.htmls else None
    if walk.texts:
        text_body = _join_texts(walk.texts)
    elif html_body is not None:
        text_body = html_to_text(html_body)
    else:
        text_body = ""
    attachments = tuple(walk.attachments)
    headers = _Headers(_headers(root), defects)
    subject = headers.subject()
    from_, to, cc, bcc, reply_to, sender = (
        headers.addresses(name) for name in ("from", "to", "cc", "bcc", "reply-to", "sender")
    )
    date = headers.date()
    message_id = headers.msg_id("message-id")
    in_reply_to = headers.msg_id("in-reply-to")
    references = headers.references()
    found = tuple(dict.fromkeys(defects))  # last: header decoding may add some
    return ParsedMessage(
        subject=subject,
        from_=from_,
        to=to,
        cc=cc,
        bcc=bcc,
        reply_to=reply_to,
        sender=sender,
        date=date,
        message_id=message_id,
        in_reply_to=in_reply_to,
        references=references,
        text_body=text_body,
        html_body=html_body,
        snippet=_snippet(text_body),
        attachments=attachments,
        has_attachments=any(not item.inline and item.content_type not in _SIGNATURE_TYPES for item in attachments),
        malformed=not MALFORMING_DEFECTS.isdisjoint(found),
        defects=found,
    )


_RAW_SUBJECT = re.compile(rb"^subject:[ \t]*(.*(?:\r?\n[ \t].*)*)", re.I | re.M)


def _unparsable(raw: object) -> ParsedMessage:
    subject = ""
    try:
        if isinstance(raw, bytes | bytearray | memoryview):
            found = _RAW_SUBJECT.search(bytes(raw[:65536]))
            if found:
                subject = _decode_text_header(found.group(1).decode("ascii", "surrogateescape"))
    except Exception:
        subject = ""
    return ParsedMessage(
        subject=subject,
        from_=(),
        to=(),
        cc=(),
        bcc=(),
        reply_to=(),
        sender=(),
        date=None,
        message_id=None,
        in_reply_to=None,
        references=(),
        text_body="",
        html_body=None,
        snippet="",
        attachments=(),
        has_attachments=False,
        malformed=True,
        defects=(UNPARSABLE_MESSAGE,),
    )


def parse_message(raw: bytes) -> ParsedMessage:
    """Parse one raw message. Never raises: failures show up in `defects` and `malformed`."""
    try:
        return _parse(bytes(raw))
    except Exception:
        return _unparsable(raw)


def extract_part(raw: bytes, part_id: str) -> tuple[bytes, str, str | None] | None:
    """(decoded bytes, content type, filename) of the part with that IMAP section number.

    None when the message has no such part. A message/rfc822 part comes back as the encapsulated
    message (regenerated, so not byte-identical to the original).
    """
    try:
        indexes = [int(index) for index in part_id.split(".")]
        if not indexes or min(indexes) < 1 or len(indexes) > _MAX_DEPTH:
            return None
        root = _parse_entity(bytes(raw), "text/plain", 0)
        parts = _entity_parts(root, top=True)
        node = root
        for index in indexes:
            if index > len(parts):
                return None
            node = parts[index - 1]
            parts = _entity_parts(node, top=False)
        multipart = node.content_type.startswith("multipart/")
        data = node.body if multipart else _transfer_decode(node, [])
        return data, node.content_type, _filename(node)
    except Exception:
        return None


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
    text = _collapse(subject)
    while True:
        stripped = _SUBJECT_PREFIX.sub("", text, count=1)
        stripped = _SUBJECT_SUFFIX.sub("", stripped)
        if stripped == text:
            break
        text = stripped
    return (text or _collapse(subject)).casefold()
