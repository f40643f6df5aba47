"""mime.compose: drafts become messages that our own parser (and the stdlib's) read back as written."""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage, Message

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mime import extract_part, parse_message
from mime.compose import (
    Attachment,
    ComposeError,
    Draft,
    Mailbox,
    compose,
    recipients,
    reply_headers,
    reply_subject,
    validate_address,
)

ANNA = Mailbox("anna@example.com", "Anna Smith")
BOB = Mailbox("bob@example.org")
DRAFT = Draft(sender=ANNA, to=(BOB,), subject="Lunch", text="See you at noon.\n")
PDF = Attachment("report.pdf", "application/pdf", b"%PDF-1.7\x00\xff binary")
LOGO = Attachment("logo.png", "image/png", b"\x89PNG\r\n\x1a\n", inline=True, content_id="logo@example.com")


def stdlib_read(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def structure(raw: bytes) -> str:
    """The MIME tree as text: multipart/mixed(text/plain,application/pdf)."""

    def walk(part: Message) -> str:
        if part.get_content_maintype() == "multipart":
            children: list[str] = []
            for child in part.get_payload():
                assert isinstance(child, Message)
                children.append(walk(child))
            return f"{part.get_content_type()}({','.join(children)})"
        return part.get_content_type()

    return walk(stdlib_read(raw))


# --- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "draft",
    [
        DRAFT,
        Draft(
            sender=Mailbox("zoe@example.com", "Zoë Müller"),
            to=(Mailbox("j@example.de", "Müller, Jürgen"), Mailbox("k@example.jp", "山田 太郎")),
            cc=(Mailbox("quote@example.com", 'Say "hi" (please)'),),
            subject="Grüße aus Köln — über den Plan für 2027 und was noch alles dazugehört, sehr lang",
            text="Hallo,\nwie geht's?\n",
        ),
        Draft(
            sender=ANNA,
            to=(BOB,),
            subject="日本語の件名",
            text="本文\n",
            html="<p>本文</p>\n",
            attachments=(
                Attachment("Übersicht.pdf", "application/pdf", b"%PDF\x00"),
                Attachment("日本語のとても長いファイル名" * 4 + ".txt", "text/plain", "テキスト".encode()),
                Attachment('say "hi"; now.txt', "text/plain", b"semicolon and quotes"),
                LOGO,
            ),
        ),
        Draft(sender=ANNA, to=(BOB,), subject="", html="<p>only html</p>\n"),
    ],
    ids=["ascii", "international-names", "international-attachments", "html-only"],
)
def test_round_trips_through_our_parser(draft: Draft) -> None:
    raw = compose(draft)
    parsed = parse_message(raw)
    assert (parsed.malformed, parsed.defects) == (False, ())
    assert parsed.subject == draft.subject
    for ours, theirs in ((parsed.from_, (draft.sender,)), (parsed.to, draft.to), (parsed.cc, draft.cc)):
        assert [(a.name, a.address) for a in ours] == [(m.name, m.address) for m in theirs]
    if draft.text is not None:
        assert parsed.text_body.rstrip("\n") == draft.text.rstrip("\n")
    assert (parsed.html_body or "").rstrip("\n") == (draft.html or "").rstrip("\n")
    found = {info.filename: info for info in parsed.attachments}  # in MIME order: inline parts come first
    assert sorted(found, key=str) == sorted(a.filename for a in draft.attachments)
    for attachment in draft.attachments:
        info = found[attachment.filename]
        assert extract_part(raw, info.part_id) == (attachment.data, attachment.content_type, attachment.filename)
        assert (info.inline, info.content_id) == (attachment.inline, attachment.content_id)
    # The stdlib's strict reader agrees on the headers that carry encoded words.
    strict = stdlib_read(raw)
    assert str(strict["Subject"]) == draft.subject
    for header, mailboxes in (("From", (draft.sender,)), ("To", draft.to), ("Cc", draft.cc)):
        found_there = strict[header].addresses if strict[header] is not None else ()
        assert [(a.display_name, a.addr_spec) for a in found_there] == [(m.name, m.address) for m in mailboxes]
    filenames = [part.get_filename() for part in strict.walk() if part.get_filename() is not None]
    assert sorted(filenames, key=str) == sorted(a.filename for a in draft.attachments)


_HEADER_TEXT = st.text(
    st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="\x85"), max_size=120
)


@settings(max_examples=150, deadline=None)
@given(subject=_HEADER_TEXT, name=_HEADER_TEXT, filename=_HEADER_TEXT.filter(lambda text: text.strip() != ""))
def test_any_printable_text_round_trips(subject: str, name: str, filename: str) -> None:
    draft = replace(
        DRAFT,
        sender=Mailbox("anna@example.com", name),
        subject=subject,
        attachments=(Attachment(filename, "application/octet-stream", b"x"),),
    )
    parsed = parse_message(compose(draft))
    assert parsed.subject == " ".join(subject.split())
    assert parsed.attachments[0].filename == " ".join(filename.split())
    # Spaces aside: see test_stdlib_can_fold_a_space_out_of_a_display_name.
    assert "".join(parsed.from_[0].name.split()) == "".join(name.split())


@pytest.mark.xfail(strict=True, reason="the stdlib's folder puts a significant space between two encoded-words")
def test_stdlib_can_fold_a_space_out_of_a_display_name() -> None:
    # Python 3.11-3.13's header folder ends one encoded-word at the line limit and starts the next after the
    # space, where RFC 2047 §6.2 says a reader drops it (ours does; the stdlib's own reader keeps it).
    # Realistic names fold inside a word and survive (the round-trip table above); this one does not.
    name = "0" + "\u0800" * 14 + " :"
    parsed = parse_message(compose(replace(DRAFT, sender=Mailbox("anna@example.com", name))))
    assert parsed.from_[0].name == name


# --- structure ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "html", "attachments", "expected"),
    [
        ("hi", None, (), "text/plain"),
        (None, None, (), "text/plain"),
        (None, "<p>hi</p>", (), "text/html"),
        ("hi", "<p>hi</p>", (), "multipart/alternative(text/plain,text/html)"),
        ("hi", None, (PDF,), "multipart/mixed(text/plain,application/pdf)"),
        (
            "hi",
            "<p>hi</p>",
            (PDF,),
            "multipart/mixed(multipart/alternative(text/plain,text/html),application/pdf)",
        ),
        (None, '<img src="cid:logo@example.com">', (LOGO,), "multipart/related(text/html,image/png)"),
        (
            "hi",
            '<img src="cid:logo@example.com">',
            (LOGO, PDF),
            "multipart/mixed(multipart/alternative(text/plain,multipart/related(text/html,image/png)),application/pdf)",
        ),
        # Nothing html to show it in: an inline part is just an attachment shown inline.
        ("hi", None, (LOGO,), "multipart/mixed(text/plain,image/png)"),
        # Inline without a Content-ID cannot be referenced from html.
        (
            "hi",
            "<p>hi</p>",
            (replace(LOGO, content_id=None),),
            "multipart/mixed(multipart/alternative(text/plain,text/html),image/png)",
        ),
    ],
)  # fmt: skip
def test_structure(text: str | None, html: str | None, attachments: tuple[Attachment, ...], expected: str) -> None:
    raw = compose(replace(DRAFT, text=text, html=html, attachments=attachments))
    assert structure(raw) == expected
    assert stdlib_read(raw)["MIME-Version"] == "1.0"


def test_attached_message_is_a_message_not_base64() -> None:
    forwarded = "Subject: inner\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nGrüße\r\n".encode()
    raw = compose(replace(DRAFT, attachments=(Attachment("fwd.eml", "message/rfc822", forwarded),)))
    assert structure(raw) == "multipart/mixed(text/plain,message/rfc822)"
    extracted = extract_part(raw, "2")
    assert extracted is not None
    inner = parse_message(extracted[0])
    assert (inner.subject, inner.text_body) == ("inner", "Grüße\n")
    assert raw.isascii()


# --- identity, date, bcc ------------------------------------------------------------------------


def test_message_id_and_date_are_always_set() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    first, second = parse_message(compose(DRAFT)), parse_message(compose(DRAFT))
    assert first.message_id is not None
    assert re.fullmatch(r"[0-9a-f]{32}@example\.com", first.message_id)
    assert first.message_id != second.message_id
    assert first.date is not None
    assert before <= first.date <= datetime.now(UTC)


@pytest.mark.parametrize(
    ("changes", "domain", "message_id", "date"),
    [
        ({"message_id": "<given@example.net>"}, None, "given@example.net", None),
        ({"message_id": "bare@example.net"}, None, "bare@example.net", None),
        ({}, "mail.example.net", r"[0-9a-f]{32}@mail\.example\.net", None),
        ({"sender": Mailbox("x@bücher.example")}, None, r"[0-9a-f]{32}@xn--bcher-kva\.example", None),
        (
            {"date": datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))},
            None,
            r"[0-9a-f]{32}@example\.com",
            datetime(2026, 1, 2, 1, 4, 5, tzinfo=UTC),
        ),
    ],
)
def test_message_id_and_date_when_given(
    changes: dict[str, object], domain: str | None, message_id: str, date: datetime | None
) -> None:
    parsed = parse_message(compose(replace(DRAFT, **changes), domain=domain))  # type: ignore[arg-type]
    assert parsed.message_id is not None
    assert re.fullmatch(message_id, parsed.message_id)
    if date is not None:
        assert parsed.date == date


def test_naive_date_is_refused() -> None:
    with pytest.raises(ComposeError) as refused:
        compose(replace(DRAFT, date=datetime(2026, 1, 1)))
    assert refused.value.field == "date"


def test_bcc_is_never_delivered() -> None:
    draft = replace(DRAFT, cc=(Mailbox("carol@example.com"),), bcc=(Mailbox("hidden@example.net", "Hidden"),))
    delivered = compose(draft)
    assert b"hidden" not in delivered.lower()
    assert stdlib_read(delivered)["Bcc"] is None
    saved = parse_message(compose(draft, include_bcc=True))
    assert [(a.name, a.address) for a in saved.bcc] == [("Hidden", "hidden@example.net")]
    assert recipients(draft) == ["bob@example.org", "carol@example.com", "hidden@example.net"]


@pytest.mark.parametrize(
    ("to", "cc", "bcc", "expected"),
    [
        (("a@x.example",), (), (), ["a@x.example"]),
        (("a@x.example", "a@X.EXAMPLE"), ("a@x.Example",), (), ["a@x.example"]),
        (("A@x.example", "a@x.example"), (), (), ["A@x.example", "a@x.example"]),  # local parts keep their case
        (("a@x.example",), ("b@x.example",), ("a@x.example", "c@x.example"),
         ["a@x.example", "b@x.example", "c@x.example"]),
        (("a@bücher.example",), (), ("a@xn--bcher-kva.example",), ["a@xn--bcher-kva.example"]),
        ((), (), (), []),
    ],
)  # fmt: skip
def test_recipients_for_the_envelope(
    to: tuple[str, ...], cc: tuple[str, ...], bcc: tuple[str, ...], expected: list[str]
) -> None:
    draft = replace(
        DRAFT,
        to=tuple(map(Mailbox, to)),
        cc=tuple(map(Mailbox, cc)),
        bcc=tuple(map(Mailbox, bcc)),
    )
    assert recipients(draft) == expected


# --- what is refused ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"subject": "hi\r\nBcc: victim@example.com"}, "subject"),
        ({"subject": "hi\nX-Injected: 1"}, "subject"),
        ({"subject": "hi\rthere"}, "subject"),
        ({"subject": "nul\x00byte"}, "subject"),
        ({"subject": "next\u2028line"}, "subject"),
        ({"sender": Mailbox("anna@example.com", "Anna\r\nBcc: x@y.example")}, "sender.name"),
        ({"sender": Mailbox("anna@example.com\r\nBcc: x@y.example")}, "sender.address"),
        ({"to": (BOB, Mailbox("c@example.com", "C\n"))}, "to[1].name"),
        ({"cc": (Mailbox("c@example.com\n"),)}, "cc[0].address"),
        ({"bcc": (Mailbox("c@example.com", "\r"),)}, "bcc[0].name"),
        ({"reply_to": (Mailbox("r@example.com\x00"),)}, "reply_to[0].address"),
        ({"message_id": "<id@example.com>\r\nBcc: x@y.example"}, "message_id"),
        ({"in_reply_to": "parent@example.com\n"}, "in_reply_to"),
        ({"references": ("root@example.com", "p@example.com\r\nX: 1")}, "references[1]"),
        ({"message_id": "two words@example.com"}, "message_id"),
        ({"attachments": (replace(PDF, filename="a\r\n.pdf"),)}, "attachments[0].filename"),
        ({"attachments": (PDF, replace(PDF, content_type="application/pdf\r\nX: 1"))}, "attachments[1].content_type"),
        ({"attachments": (replace(PDF, content_type="pdf"),)}, "attachments[0].content_type"),
        ({"attachments": (replace(PDF, content_type="multipart/mixed"),)}, "attachments[0].content_type"),
        ({"attachments": (replace(LOGO, content_id="logo\n@example.com"),)}, "attachments[0].content_id"),
        ({"headers": (("X-Mailer", "inboxql\r\nBcc: x@y.example"),)}, "headers['X-Mailer']"),
        ({"headers": (("X Mailer", "inboxql"),)}, "headers['X Mailer']"),
        ({"headers": (("Bcc", "x@y.example"),)}, "headers['Bcc']"),
        ({"headers": (("content-type", "text/html"),)}, "headers['content-type']"),
    ],
)  # fmt: skip
def test_header_injection_is_refused(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ComposeError) as refused:
        compose(replace(DRAFT, **changes))  # type: ignore[arg-type]
    assert refused.value.field == field
    assert str(refused.value).startswith(f"{field}: ")


def test_extra_headers_are_written() -> None:
    raw = compose(replace(DRAFT, headers=(("Auto-Submitted", "auto-replied"), ("X-Mailer", "inboxql"))))
    read = stdlib_read(raw)
    assert (read["Auto-Submitted"], read["X-Mailer"]) == ("auto-replied", "inboxql")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("anna@example.com", "anna@example.com"),
        ("first.last+tag@sub.example.co.uk", "first.last+tag@sub.example.co.uk"),
        ("a@bücher.example", "a@xn--bcher-kva.example"),
        ("a@[192.0.2.1]", "a@[192.0.2.1]"),
        ("", None),
        ("anna", None),
        ("anna@", None),
        ("@example.com", None),
        ("a@b@example.com", None),
        ("anna smith@example.com", None),
        ('"anna smith"@example.com', None),
        ("anna@exa mple.com", None),
        (" anna@example.com", None),
        ("anna@example.com\r\n", None),
        ("a\tb@example.com", None),
        ("<anna@example.com>", None),
        ("Anna <anna@example.com>", None),
        ("a..b@example.com", None),
        ("anna@example..com", None),
        ("anna@example.com.", None),
        ("änna@example.com", None),  # would need SMTPUTF8
        ("a,b@example.com", None),
    ],
)
def test_validate_address(text: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(ComposeError) as refused:
            validate_address(text)
        assert refused.value.field == "address"
    else:
        assert validate_address(text) == expected


@pytest.mark.parametrize("field", ["to", "cc", "bcc", "reply_to"])
def test_invalid_recipient_addresses_are_refused(field: str) -> None:
    with pytest.raises(ComposeError) as refused:
        compose(replace(DRAFT, **{field: (BOB, Mailbox("not an address"))}))  # type: ignore[arg-type]
    assert refused.value.field == f"{field}[1].address"


# --- the wire format ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("short ascii lines\nonly\n", "7bit"),
        ("x" * 5000 + "\n", "quoted-printable"),
        ("é" * 3000 + "\n", "base64"),
        ("mostly ascii, one é, and a long line " * 100 + "\n", "quoted-printable"),
        ("bare\rcarriage\rreturns\n", "7bit"),
    ],
)
def test_crlf_line_ends_and_short_lines(text: str, encoding: str) -> None:
    raw = compose(replace(DRAFT, text=text, subject="s" * 300, attachments=(PDF,)))
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert b"\r" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    body = next(stdlib_read(raw).iter_parts())
    assert body["Content-Transfer-Encoding"] in (encoding, None if encoding == "7bit" else encoding)
    parsed = parse_message(raw)
    assert parsed.text_body.rstrip("\n") == text.replace("\r", "\n").rstrip("\n")


# --- replies ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parent_id", "parent_references", "expected"),
    [
        ("p@x", (), ("p@x", ("p@x",))),
        ("<p@x>", ("<root@x>", "mid@x"), ("p@x", ("root@x", "mid@x", "p@x"))),
        ("p@x", ("root@x", "p@x"), ("p@x", ("root@x", "p@x"))),  # already listed: once
        (None, ("root@x",), (None, ("root@x",))),
        (None, (), (None, ())),
        ("p@x", tuple(f"r{i}@x" for i in range(30)), ("p@x", ("r0@x", *(f"r{i}@x" for i in range(12, 30)), "p@x"))),
    ],
)  # fmt: skip
def test_reply_headers(
    parent_id: str | None, parent_references: tuple[str, ...], expected: tuple[str | None, tuple[str, ...]]
) -> None:
    assert reply_headers(parent_id, parent_references) == expected


def test_reply_headers_thread_with_the_parent() -> None:
    parent = parse_message(compose(replace(DRAFT, references=("root@example.com",), in_reply_to="root@example.com")))
    in_reply_to, references = reply_headers(parent.message_id, parent.references)
    reply = parse_message(
        compose(replace(DRAFT, subject=reply_subject(parent.subject), in_reply_to=in_reply_to, references=references))
    )
    assert reply.in_reply_to == parent.message_id
    assert reply.references == ("root@example.com", parent.message_id)
    assert reply.subject == "Re: Lunch"


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Lunch", "Re: Lunch"),
        ("Re: Lunch", "Re: Lunch"),
        ("RE: Lunch", "RE: Lunch"),
        ("re:Lunch", "re:Lunch"),
        ("AW: Mittag", "AW: Mittag"),
        ("SV: Lunsj", "SV: Lunsj"),
        ("Re[2]: Lunch", "Re[2]: Lunch"),
        ("[team] Re: Lunch", "[team] Re: Lunch"),
        ("Fwd: Lunch", "Re: Fwd: Lunch"),  # a reply to a forward is a reply
        ("Regarding lunch", "Re: Regarding lunch"),
        ("  spaced   out ", "Re: spaced out"),
        ("", "Re:"),
    ],
)
def test_reply_subject(subject: str, expected: str) -> None:
    assert reply_subject(subject) == expected
