"""`parse_message`: raw RFC 5322 bytes -> the fields the mirror stores; `extract_part`: one part's bytes.

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

import re
from dataclasses import dataclass
from datetime import datetime

from .charsets import decode_bytes
from .defects import HEADER_PARSE_ERROR, MALFORMING_DEFECTS, PART_DECODE_ERROR, UNPARSABLE_MESSAGE
from .entity import (
    ENCAPSULATED,
    MAX_DEPTH,
    Entity,
    base64_size,
    disposition_of,
    entity_parts,
    filename_of,
    parse_entity,
    transfer_decode,
)
from .headers import Address, collapse, decode_text_header, parse_addresses, parse_date, parse_message_id, parse_msg_ids
from .html import html_to_text
from .snippets import make_snippet

__all__ = ["AttachmentInfo", "ParsedMessage", "extract_part", "parse_message"]


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


_SIGNATURE_TYPES = frozenset(
    {"application/pgp-signature", "application/pkcs7-signature", "application/x-pkcs7-signature"}
)


def _tree_defects(root: Entity) -> list[str]:
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
    attached_messages: list[Entity]


def _walk(root: Entity, walk: _Walk) -> None:
    # Iterative so that hostile nesting cannot exhaust the stack.
    stack: list[tuple[Entity, str, bool]] = [
        (part, str(index), False) for index, part in enumerate(entity_parts(root, True), 1)
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
        children = entity_parts(entity, top=False)
        stack.extend((children[index - 1], f"{part_id}.{index}", inside) for index in range(len(children), 0, -1))


def _leaf(entity: Entity, part_id: str, walk: _Walk) -> None:
    content_type = entity.content_type
    is_multipart = content_type.startswith("multipart/")
    if is_multipart:
        content_type = "text/plain"  # a multipart we could not split: show its text
    disposition = disposition_of(entity)
    filename = filename_of(entity)
    if content_type in ("text/plain", "text/html") and disposition != "attachment" and filename is None:
        data = entity.body if is_multipart else transfer_decode(entity, walk.defects)
        text = decode_bytes(data, entity.params.get("charset"), walk.defects)
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        if "\x00" in text:
            text = text.replace("\x00", "")
        (walk.texts if content_type == "text/plain" else walk.htmls).append(text)
        return
    if content_type in ENCAPSULATED and entity.children:
        walk.attached_messages.append(entity.children[0])
    raw_id = entity.get("content-id")
    content_id = parse_message_id(raw_id) if raw_id is not None else None
    walk.attachments.append(
        AttachmentInfo(
            part_id=part_id,
            filename=filename,
            content_type=content_type,
            size=_decoded_size(entity, is_multipart, walk.defects),
            content_id=content_id,
            inline=disposition == "inline" or (not disposition and content_id is not None),
        )
    )


def _decoded_size(entity: Entity, is_multipart: bool, defects: list[str]) -> int:
    """An attachment's decoded size: base64 (most of them, and the large ones) is measured, not decoded."""
    if is_multipart:
        return len(entity.body)
    if (entity.get("content-transfer-encoding") or "").strip().lower() == "base64":
        return base64_size(entity.body, defects)
    return len(transfer_decode(entity, defects))


_SINGLE_HEADERS = frozenset({"subject", "date", "message-id", "in-reply-to"})
_LIST_HEADERS = frozenset({"from", "to", "cc", "bcc", "reply-to", "sender", "references"})


def _headers(entity: Entity) -> dict[str, list[str]]:
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
            return decode_text_header(value)
        except Exception:
            self.defects.append(HEADER_PARSE_ERROR)
            return collapse(value.encode("utf-8", "replace").decode("utf-8"))

    def addresses(self, name: str) -> tuple[Address, ...]:
        try:
            return parse_addresses(self.raw.get(name, []))
        except Exception:
            self.defects.append(HEADER_PARSE_ERROR)
            return ()

    def msg_id(self, name: str) -> str | None:
        try:
            return parse_message_id(self.first(name))
        except Exception:
            self.defects.append(HEADER_PARSE_ERROR)
            return None

    def references(self) -> tuple[str, ...]:
        try:
            ids: list[str] = []
            for value in self.raw.get("references", []):
                ids.extend(parse_msg_ids(value))
            return tuple(dict.fromkeys(ids))
        except Exception:
            self.defects.append(HEADER_PARSE_ERROR)
            return ()

    def date(self) -> datetime | None:
        try:
            return parse_date(self.first("date"))
        except Exception:
            self.defects.append(HEADER_PARSE_ERROR)
            return None


def _join_texts(texts: list[str]) -> str:
    if len(texts) == 1:
        return texts[0]
    return "\n".join(text if text.endswith("\n") else text + "\n" for text in texts if text)


def _parse(raw: bytes) -> ParsedMessage:
    root = parse_entity(raw, "text/plain", 0, containers=False)
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
        snippet=make_snippet(text_body),
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
                subject = decode_text_header(found.group(1).decode("ascii", "surrogateescape"))
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
        if not indexes or min(indexes) < 1 or len(indexes) > MAX_DEPTH:
            return None
        root = parse_entity(bytes(raw), "text/plain", 0)
        parts = entity_parts(root, top=True)
        node = root
        for index in indexes:
            if index > len(parts):
                return None
            node = parts[index - 1]
            parts = entity_parts(node, top=False)
        multipart = node.content_type.startswith("multipart/")
        data = node.body if multipart else transfer_decode(node, [])
        return data, node.content_type, filename_of(node)
    except Exception:
        return None
