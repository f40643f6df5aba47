"""Compose outgoing mail: a typed `Draft` -> RFC 5322 bytes ready for SMTP DATA or IMAP APPEND.

The stdlib's `email` package writes the MIME (RFC 2047 words for non-ASCII header text, RFC 2231 for
non-ASCII filenames, quoted-printable or base64 for bodies that are not short ASCII lines); this module
decides the structure and refuses what must never reach the wire:

* a CR, LF or NUL (or any other line break) in a header field value: header injection;
* an address that is not exactly `local@domain` (one "@", no spaces, non-empty parts);
* a header the draft names on its own (`Draft.headers`) that this module writes itself.

Structure, innermost first (RFC 2046, RFC 2387):

    text only -> text/plain            html only -> text/html         both -> multipart/alternative
    html with inline attachments that have a Content-ID -> multipart/related(html, inline parts)
    any other attachment -> multipart/mixed(body, attachments)

The Bcc header is left out unless `include_bcc` (RFC 5322 §3.6.3: the copy kept in Sent or Drafts may carry it,
the one delivered must not); the SMTP envelope still names every recipient (`recipients`).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart
from email.utils import format_datetime

__all__ = [
    "Attachment",
    "ComposeError",
    "Draft",
    "Mailbox",
    "compose",
    "recipients",
    "reply_headers",
    "reply_subject",
    "validate_address",
]


@dataclass(frozen=True, slots=True)
class Mailbox:
    address: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes
    inline: bool = False
    content_id: str | None = None  # without angle brackets; an inline part with one can be shown by the html


@dataclass(frozen=True, slots=True)
class Draft:
    sender: Mailbox
    to: tuple[Mailbox, ...] = ()
    cc: tuple[Mailbox, ...] = ()
    bcc: tuple[Mailbox, ...] = ()
    reply_to: tuple[Mailbox, ...] = ()
    subject: str = ""
    text: str | None = None
    html: str | None = None
    attachments: tuple[Attachment, ...] = ()
    in_reply_to: str | None = None  # message ids, with or without angle brackets
    references: tuple[str, ...] = ()
    message_id: str | None = None  # made up (<random@domain>) when None
    date: datetime | None = None  # now when None; must carry a time zone
    headers: tuple[tuple[str, str], ...] = ()  # extra fields, e.g. ("Auto-Submitted", "auto-replied")


class ComposeError(ValueError):
    """The draft cannot become a message; `field` names the part of the draft at fault."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


# policy.SMTP writes CRLF; cte_type="7bit" makes non-ASCII bodies quoted-printable or base64 rather than
# 8bit, which would need the server's 8BITMIME. Header lines fold at 78; body lines stay within it too.
_POLICY = policy.SMTP.clone(cte_type="7bit")

# Everything str.splitlines() breaks at, and NUL: none of it belongs in one header line.
_FORBIDDEN_IN_HEADERS = re.compile("[\r\n\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
# RFC 5322 §3.6.8: a field name is printable ASCII other than the colon.
_FIELD_NAME = re.compile(r"[!-9;-~]+")
# RFC 2045 §5.1: type "/" subtype, both tokens.
_CONTENT_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+")
# What goes between the angle brackets of a msg-id (RFC 5322 §3.6.4), leniently: no spaces, brackets or controls.
_MSG_ID = re.compile(r"[!-;=?-~]+")
# Fields that compose writes: a draft cannot set them through `headers`.
_OWN_FIELDS = frozenset(
    {
        "from",
        "sender",
        "to",
        "cc",
        "bcc",
        "reply-to",
        "subject",
        "date",
        "message-id",
        "in-reply-to",
        "references",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "content-disposition",
        "content-id",
    }
)
# Reply prefixes (not forward ones) that a reply keeps instead of adding "Re: ": English, German, Nordic,
# Finnish, Dutch, Italian, Polish, Portuguese, Turkish, Latvian; counted forms too; mailing-list tags first.
_ALREADY_REPLY = re.compile(
    r"^\s*(?:\[[^\]]*\]\s*)*(?:re|aw|sv|vs|antw|rif|odp|res|ynt|atb)\s*(?:\[\d+\]|\(\d+\)|\^\d+)?\s*[:\uff1a]", re.I
)
# Long threads: keep the root and the newest ids (RFC 5322 §3.6.4 leaves trimming to the writer).
MAX_REFERENCES = 20


def _check_header_text(field: str, value: str) -> str:
    if _FORBIDDEN_IN_HEADERS.search(value):
        raise ComposeError(field, "contains a line break or NUL (CR, LF, NUL are not allowed in a header)")
    return value


def validate_address(text: str, field: str = "address") -> str:
    """`local@domain` as it goes on the wire (an international domain as IDNA), or ComposeError.

    One "@", a non-empty local part and domain, no spaces or controls, and what RFC 5322's addr-spec accepts.
    """
    _check_header_text(field, text)
    if text.count("@") != 1:
        raise ComposeError(field, f"{text!r} must hold exactly one '@'")
    local, domain = text.split("@")
    if not local or not domain:
        raise ComposeError(field, f"{text!r} needs a local part and a domain")
    if any(char.isspace() or not char.isprintable() for char in text):
        raise ComposeError(field, f"{text!r} contains spaces or control characters")
    if not local.isascii():
        raise ComposeError(field, f"{text!r}: a non-ASCII local part needs SMTPUTF8, which is not supported")
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError as error:
            raise ComposeError(field, f"{text!r}: the domain is not a valid international name") from error
    try:
        parsed = Address(addr_spec=f"{local}@{domain}")
    except (ValueError, IndexError, HeaderParseError) as error:
        raise ComposeError(field, f"{text!r} is not an address ({error})") from error
    if parsed.addr_spec != f"{local}@{domain}":
        raise ComposeError(field, f"{text!r} is not a plain addr-spec")
    return parsed.addr_spec


def _address(mailbox: Mailbox, field: str) -> Address:
    spec = validate_address(mailbox.address, f"{field}.address")
    name = " ".join(_check_header_text(f"{field}.name", mailbox.name).split())
    return Address(display_name=name, addr_spec=spec)


def _addresses(mailboxes: Sequence[Mailbox], field: str) -> tuple[Address, ...]:
    return tuple(_address(mailbox, f"{field}[{index}]") for index, mailbox in enumerate(mailboxes))


def _msg_id(value: str, field: str) -> str:
    """A message id in angle brackets; accepts it with or without them."""
    _check_header_text(field, value)
    bare = value.strip()
    if bare.startswith("<") and bare.endswith(">"):
        bare = bare[1:-1]
    if not _MSG_ID.fullmatch(bare):
        raise ComposeError(field, f"{value!r} is not a message id")
    return f"<{bare}>"


def _domain_of(draft: Draft, domain: str | None) -> str:
    if domain is None:
        return validate_address(draft.sender.address, "sender.address").rpartition("@")[2]
    _check_header_text("domain", domain)
    if not _MSG_ID.fullmatch(domain) or "@" in domain:
        raise ComposeError("domain", f"{domain!r} cannot end a message id")
    return domain


def _leaf(content: str, subtype: str) -> MIMEPart:
    part = MIMEPart(policy=_POLICY)
    part.set_content(content, subtype=subtype)  # utf-8; 7bit, quoted-printable or base64 by the stdlib's choice
    return part


def _multipart(subtype: str, parts: Iterable[MIMEPart]) -> MIMEPart:
    container = MIMEPart(policy=_POLICY)
    container["Content-Type"] = f"multipart/{subtype}"
    for part in parts:
        container.attach(part)  # the generator picks a boundary found in none of the parts
    return container


def _attachment(attachment: Attachment, field: str) -> MIMEPart:
    filename = _check_header_text(f"{field}.filename", attachment.filename)
    content_type = _check_header_text(f"{field}.content_type", attachment.content_type).strip().lower()
    if not _CONTENT_TYPE.fullmatch(content_type):
        raise ComposeError(f"{field}.content_type", f"{attachment.content_type!r} is not type/subtype")
    maintype, subtype = content_type.split("/")
    if maintype == "multipart":
        raise ComposeError(f"{field}.content_type", "an attachment cannot be multipart")
    cid = None if attachment.content_id is None else _msg_id(attachment.content_id, f"{field}.content_id")
    disposition = "inline" if attachment.inline else "attachment"
    part = MIMEPart(policy=_POLICY)
    if content_type == "message/rfc822":
        # RFC 2046 §5.2.1: never base64. The stdlib writes the attached message as a message, recoding its
        # 8-bit parts for a 7-bit wire (so not byte-identical, as mime.extract_part's copy is not either).
        attached = message_from_bytes(attachment.data, policy=_POLICY)
        part.set_content(attached, disposition=disposition, filename=filename or None, cid=cid)
    else:
        part.set_content(
            attachment.data,
            maintype=maintype,
            subtype=subtype,
            disposition=disposition,
            filename=filename or None,  # non-ASCII: RFC 2231 filename*=utf-8''...
            cid=cid,
        )
    return part


def _body(draft: Draft) -> MIMEPart:
    # Inline parts with a Content-ID belong with the html that shows them (RFC 2387); others are attachments.
    related: list[MIMEPart] = []
    mixed: list[MIMEPart] = []
    for index, item in enumerate(draft.attachments):
        shown_by_html = item.inline and item.content_id is not None and draft.html is not None
        (related if shown_by_html else mixed).append(_attachment(item, f"attachments[{index}]"))
    if draft.html is None:
        body = _leaf(draft.text or "", "plain")
    else:
        body = _leaf(draft.html, "html")
        if related:
            body = _multipart("related", [body, *related])
        if draft.text is not None:
            body = _multipart("alternative", [_leaf(draft.text, "plain"), body])  # RFC 2046 §5.1.4: plainest first
    return _multipart("mixed", [body, *mixed]) if mixed else body


def compose(draft: Draft, *, include_bcc: bool = False, domain: str | None = None) -> bytes:
    """The message as bytes (CRLF line ends, lines within 78 octets but for the rare unbreakable header).

    `include_bcc` keeps the Bcc header, for the copy saved to Sent or Drafts only. `domain` goes to the right of
    a made-up Message-ID (default: the sender's domain). Raises ComposeError for anything it refuses.
    """
    message = EmailMessage(policy=_POLICY)
    message["From"] = _address(draft.sender, "sender")
    for header, field, mailboxes in (
        ("To", "to", draft.to),
        ("Cc", "cc", draft.cc),
        ("Bcc", "bcc", draft.bcc),
        ("Reply-To", "reply_to", draft.reply_to),
    ):
        addresses = _addresses(mailboxes, field)  # checked even when not written (Bcc)
        if addresses and (header != "Bcc" or include_bcc):
            message[header] = addresses
    message["Subject"] = _check_header_text("subject", draft.subject)
    date = draft.date if draft.date is not None else datetime.now(UTC)
    if date.utcoffset() is None:
        raise ComposeError("date", "needs a time zone")
    message["Date"] = format_datetime(date)
    if draft.message_id is not None:
        message["Message-ID"] = _msg_id(draft.message_id, "message_id")
    else:
        message["Message-ID"] = f"<{secrets.token_hex(16)}@{_domain_of(draft, domain)}>"
    if draft.in_reply_to is not None:
        message["In-Reply-To"] = _msg_id(draft.in_reply_to, "in_reply_to")
    if draft.references:
        message["References"] = " ".join(
            _msg_id(item, f"references[{index}]") for index, item in enumerate(draft.references)
        )
    for name, value in draft.headers:
        field = f"headers[{name!r}]"
        if not _FIELD_NAME.fullmatch(name):
            raise ComposeError(field, "is not a header field name")
        if name.lower() in _OWN_FIELDS:
            raise ComposeError(field, "is written by compose itself")
        message[name] = _check_header_text(field, value)
    message["MIME-Version"] = "1.0"
    body = _body(draft)
    for name, value in body.items():  # the body's own Content-* fields move up to the message
        message[name] = value
    message.set_payload(body.get_payload())
    try:
        return message.as_bytes(policy=_POLICY)
    except (ValueError, TypeError, HeaderParseError) as error:  # the stdlib's last word on a header
        raise ComposeError("message", str(error)) from error


def recipients(draft: Draft) -> list[str]:
    """The SMTP envelope's RCPT TO addresses: to, cc and bcc, each once.

    RFC 5321 §2.4: a domain is case-insensitive, a local part may not be, so only the domain is folded.
    """
    seen: set[str] = set()
    found: list[str] = []
    for field, mailboxes in (("to", draft.to), ("cc", draft.cc), ("bcc", draft.bcc)):
        for index, mailbox in enumerate(mailboxes):
            address = validate_address(mailbox.address, f"{field}[{index}].address")
            local, _, domain = address.rpartition("@")
            key = f"{local}@{domain.lower()}"
            if key not in seen:
                seen.add(key)
                found.append(address)
    return found


def reply_headers(
    parent_message_id: str | None, parent_references: Sequence[str] = ()
) -> tuple[str | None, tuple[str, ...]]:
    """(In-Reply-To, References) for a reply to the parent, bare ids as `mime.parse_message` gives them.

    RFC 5322 §3.6.4: In-Reply-To is the parent's Message-ID; References is the parent's References followed by
    its Message-ID. Long chains keep the root and the newest ids.
    """
    chain = [ref.strip().strip("<>") for ref in parent_references if ref.strip().strip("<>")]
    parent = parent_message_id.strip().strip("<>") if parent_message_id else None
    if parent:
        chain.append(parent)
    chain = list(dict.fromkeys(chain))
    if len(chain) > MAX_REFERENCES:
        chain = [chain[0], *chain[-(MAX_REFERENCES - 1) :]]
    return parent or None, tuple(chain)


def reply_subject(subject: str) -> str:
    """ "Re: " before the parent's subject, unless it already says it is a reply (Re:, AW:, SV:, [list] Re:)."""
    subject = " ".join(subject.split())
    if _ALREADY_REPLY.match(subject):
        return subject
    return f"Re: {subject}" if subject else "Re:"
