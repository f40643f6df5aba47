"""mime: raw RFC 5322 bytes -> the fields the mirror stores."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inboxql.mailgen import generate
from mime import Address, ParsedMessage, extract_part, normalize_subject, parse_message


def mail(headers: str, body: bytes | str = b"", *, charset: str = "utf-8") -> bytes:
    data = body.encode(charset) if isinstance(body, str) else body
    head = headers.strip("\n").replace("\n", "\r\n").encode("utf-8")
    return head + b"\r\n\r\n" + data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def subject_of(raw_subject: bytes) -> str:
    return parse_message(b"Subject: " + raw_subject + b"\r\n\r\nbody\r\n").subject


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"=?utf-8?b?w6nDqA==?=", "éè"),
        (b"=?ISO-8859-1?Q?caf=E9_au_lait?=", "café au lait"),
        (b"=?utf-8?q?caf=C3=A9?= =?utf-8?q?_noir?=", "café noir"),  # adjacent words join
        (b"=?utf-8?q?a?=\r\n =?iso-8859-1?q?=E9?=", "aé"),  # folded, two charsets
        (b"=?utf-8?q?=C3?= =?utf-8?q?=A9?=", "é"),  # one character split across words
        (b"Re: =?utf-8?q?caf=C3=A9?= at noon", "Re: café at noon"),
        (b"=?utf-8*en?q?hello?=", "hello"),  # RFC 2231 language tag
        (b"=?utf-8?b?w6k?=", "é"),  # missing base64 padding
        (b"=?x-bogus?q?caf=C3=A9?=", "café"),  # unknown charset: UTF-8 fallback
        (b"=?utf-8?x?abc?=", "=?utf-8?x?abc?="),  # not an encoded word: left alone
        (b"plain \r\n\tfolded   subject ", "plain folded subject"),
        (b"caf\xc3\xa9 (raw UTF-8)", "café (raw UTF-8)"),
        (b"caf\xe9 (raw latin-1)", "café (raw latin-1)"),
        (b"", ""),
    ],
)
def test_decodes_subjects(raw: bytes, expected: str) -> None:
    assert subject_of(raw) == expected


def attachment_message(disposition: str) -> bytes:
    return mail(
        """
Subject: files
Content-Type: multipart/mixed; boundary="b1"
""",
        "--b1\n"
        "Content-Type: text/plain\n\nsee attached\n"
        "--b1\n"
        "Content-Type: application/octet-stream\n"
        f"Content-Disposition: {disposition}\n"
        "Content-Transfer-Encoding: base64\n\n"
        f"{base64.b64encode(b'0123456789').decode()}\n"
        "--b1--\n",
    )


@pytest.mark.parametrize(
    ("disposition", "expected"),
    [
        ("attachment; filename=report.pdf", "report.pdf"),
        ('attachment; filename="quarterly report.pdf"', "quarterly report.pdf"),
        ("attachment; filename*=utf-8''%C3%9Cbersicht.pdf", "Übersicht.pdf"),
        ('attachment; filename*0="very_long_"; filename*1="name.txt"', "very_long_name.txt"),
        (
            "attachment;\n filename*0*=iso-8859-1''caf%E9; filename*1*=%20menu.txt",
            "café menu.txt",
        ),
        ('attachment; filename="=?utf-8?q?r=C3=A9sum=C3=A9.pdf?="', "résumé.pdf"),
        ('attachment; filename="=?utf-8?b?5pel5pys6KqeLnR4dA==?="', "日本語.txt"),
        # Both forms: the RFC 2231 one wins (the plain one is a fallback for old readers; the
        # stdlib would return the fallback).
        ("attachment; filename=\"fallback.pdf\"; filename*=utf-8''r%C3%A9al.pdf", "réal.pdf"),
        ('attachment; filename="a;b.txt"; size=10', "a;b.txt"),
        ('attachment; filename="say \\"hi\\".txt"', 'say "hi".txt'),
        ("attachment", None),
    ],
)
def test_decodes_attachment_filenames(disposition: str, expected: str | None) -> None:
    parsed = parse_message(attachment_message(disposition))
    (attachment,) = parsed.attachments
    assert attachment.filename == expected
    assert (attachment.part_id, attachment.size, attachment.inline) == ("2", 10, False)
    assert parsed.has_attachments
    assert parsed.text_body == "see attached"  # the line break before "--b1" is the delimiter's


def test_takes_filename_from_content_type_name() -> None:
    raw = mail(
        "Content-Type: multipart/mixed; boundary=x",
        '--x\nContent-Type: image/png; name="=?utf-8?q?sch=C3=B6n.png?="\n\nPNG\n--x--\n',
    )
    assert [a.filename for a in parse_message(raw).attachments] == ["schön.png"]


@pytest.mark.parametrize(
    ("content_type", "body", "expected", "defect"),
    [
        ("text/plain; charset=koi8-r", "Привет, мир".encode("koi8-r"), "Привет, мир", None),
        ("text/plain; charset=shift_jis", "会議".encode("shift_jis"), "会議", None),
        ("text/plain", "naïve UTF-8".encode(), "naïve UTF-8", None),  # no charset, 8-bit
        ("text/plain", "naïve latin-1".encode("latin-1"), "naïve latin-1", None),
        ("text/plain; charset=x-unheard-of", "café".encode(), "café", "UnknownCharset"),
        ("text/plain; charset=us-ascii", "café €".encode("cp1252"), "café €", None),
        ("text/plain; charset=utf-8", "café".encode("latin-1"), "café", "CharsetMismatch"),
        ("text/plain; charset=unknown-8bit", "Grüße".encode(), "Grüße", None),
    ],
)
def test_decodes_body_charsets(content_type: str, body: bytes, expected: str, defect: str | None) -> None:
    raw = mail(f"Content-Type: {content_type}\nContent-Transfer-Encoding: 8bit", body)
    parsed = parse_message(raw)
    assert parsed.text_body == expected
    assert not parsed.malformed
    if defect is not None:
        assert defect in parsed.defects


def test_quoted_printable_and_base64_bodies() -> None:
    qp = mail(
        "Content-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable",
        b"caf=E9 au =\nlait\n",
    )
    b64 = mail(
        "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64",
        base64.encodebytes("Grüße\n".encode()),
    )
    assert parse_message(qp).text_body == "café au lait\n"
    assert parse_message(b64).text_body == "Grüße\n"


def test_html_only_message_gets_text_from_html() -> None:
    raw = mail(
        "Subject: news\nContent-Type: text/html; charset=utf-8",
        "<html><head><style>p {color: red}</style><title>x</title></head><body>"
        "<p>Hello&nbsp;<b>world</b> &amp; friends</p><div>second line</div>"
        "<script>alert(1)</script></body></html>",
    )
    parsed = parse_message(raw)
    assert parsed.html_body is not None
    assert "<b>world</b>" in parsed.html_body
    assert parsed.text_body == "Hello world & friends\n\nsecond line"
    assert parsed.snippet == "Hello world & friends second line"


def test_alternative_keeps_both_bodies() -> None:
    raw = mail(
        "Content-Type: multipart/alternative; boundary=alt",
        "--alt\nContent-Type: text/plain\n\nplain text\n--alt\nContent-Type: text/html\n\n<p>html text</p>\n--alt--\n",
    )
    parsed = parse_message(raw)
    assert (parsed.text_body, parsed.html_body) == ("plain text", "<p>html text</p>")
    assert parsed.attachments == ()


NESTED = mail(
    """
From: =?utf-8?q?Zo=C3=AB?= <zoe@example.com>
Subject: photo
Content-Type: multipart/mixed; boundary="outer"
""",
    "preamble\n"
    "--outer\n"
    "Content-Type: multipart/alternative; boundary=inner\n\n"
    "--inner\nContent-Type: text/plain; charset=utf-8\n\nLook at this\n"
    "--inner\n"
    "Content-Type: multipart/related; boundary=rel\n\n"
    '--rel\nContent-Type: text/html; charset=utf-8\n\n<img src="cid:img1@x">\n'
    "--rel\nContent-Type: image/png\nContent-ID: < img1@x >\n"
    "Content-Transfer-Encoding: base64\n\n"
    f"{base64.b64encode(b'PNGDATA').decode()}\n"
    "--rel--\n"
    "--inner--\n"
    "--outer\n"
    "Content-Type: message/rfc822\n\n"
    "Subject: forwarded\nContent-Type: multipart/mixed; boundary=fw\n\n"
    "--fw\nContent-Type: text/plain\n\ninner text\n"
    "--fw\nContent-Type: application/pdf; name=inner.pdf\n\n%PDF\n--fw--\n"
    "--outer--\n"
    "epilogue\n",
)


def test_nested_multipart_with_inline_image_and_attached_message() -> None:
    parsed = parse_message(NESTED)
    image, forwarded = parsed.attachments
    assert (image.part_id, image.content_type, image.content_id) == ("1.2.2", "image/png", "img1@x")
    assert (image.inline, image.size, image.filename) == (True, 7, None)
    assert (forwarded.part_id, forwarded.content_type, forwarded.inline) == (
        "2",
        "message/rfc822",
        False,
    )
    assert parsed.text_body == "Look at this"
    assert parsed.html_body == '<img src="cid:img1@x">'
    assert parsed.has_attachments  # the attached message counts; the inline image does not
    assert parsed.from_ == (Address("Zoë", "zoe@example.com"),)
    assert (parsed.malformed, parsed.defects) == (False, ())


def test_message_that_is_only_a_forward_shows_the_forwarded_text() -> None:
    raw = mail(
        "Subject: Fwd: x\nContent-Type: multipart/mixed; boundary=m",
        "--m\nContent-Type: message/rfc822\n\nSubject: x\n\nthe forwarded text\n--m--\n",
    )
    parsed = parse_message(raw)
    assert (parsed.text_body, parsed.snippet) == ("the forwarded text", "the forwarded text")
    assert [a.content_type for a in parsed.attachments] == ["message/rfc822"]


@pytest.mark.parametrize(
    ("part_id", "expected"),
    [
        ("1.1", (b"Look at this", "text/plain", None)),
        ("1.2.2", (b"PNGDATA", "image/png", None)),
        ("2.1", (b"inner text", "text/plain", None)),
        ("2.2", (b"%PDF", "application/pdf", "inner.pdf")),
        ("3", None),
        ("1.3", None),
        ("0", None),
        ("", None),
        ("x.1", None),
    ],
)
def test_extracts_parts_by_imap_section(part_id: str, expected: tuple[bytes, str, str | None] | None) -> None:
    assert extract_part(NESTED, part_id) == expected


def test_extracts_attached_message_and_single_part_body() -> None:
    extracted = extract_part(NESTED, "2")
    assert extracted is not None
    data, content_type, _ = extracted
    assert content_type == "message/rfc822"
    assert parse_message(data).subject == "forwarded"
    assert extract_part(mail("Subject: x", "just text\n"), "1") == (b"just text\r\n", "text/plain", None)


@pytest.mark.parametrize(
    ("body", "defect", "text"),
    [
        ("no boundary lines at all\n", "StartBoundaryNotFoundDefect", "no boundary lines at all"),
        ("--b\nContent-Type: text/plain\n\ncut short\n", "CloseBoundaryNotFoundDefect", "cut short"),
    ],
)
def test_broken_boundaries_are_flagged_and_keep_text(body: str, defect: str, text: str) -> None:
    parsed = parse_message(mail('Content-Type: multipart/mixed; boundary="b"', body))
    assert parsed.malformed
    assert defect in parsed.defects
    assert text in parsed.text_body


def test_multipart_without_boundary_is_flagged() -> None:
    parsed = parse_message(mail("Content-Type: multipart/mixed", "text anyway\n"))
    assert parsed.malformed
    assert "NoBoundaryInMultipartDefect" in parsed.defects
    assert parsed.text_body == "text anyway\n"


def test_header_line_without_colon_starts_the_body() -> None:
    parsed = parse_message(b"Subject: ok\r\nthis is not a header\r\nTo: a@b.c\r\n\r\nbody\r\n")
    assert parsed.malformed
    assert "MissingHeaderBodySeparatorDefect" in parsed.defects
    assert parsed.subject == "ok"
    assert parsed.to == ()
    assert parsed.text_body.startswith("this is not a header")


def test_bad_base64_is_flagged_but_decoded() -> None:
    raw = mail(
        "Content-Type: multipart/mixed; boundary=b",
        "--b\nContent-Type: application/pdf\nContent-Transfer-Encoding: base64\n\nQUJD!RA\n--b--\n",
    )
    parsed = parse_message(raw)
    assert parsed.malformed
    assert "InvalidBase64CharactersDefect" in parsed.defects
    assert parsed.attachments[0].size == 4  # "ABCD"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\xff\xfe garbage",
        b"\r\n\r\n",
        b"Content-Type: multipart/mixed; boundary=a\r\n\r\n"
        + b"--a\r\nContent-Type: multipart/mixed; boundary=a\r\n\r\n" * 500,
        b"Content-Type: message/rfc822\r\n\r\n" * 300,
        b"Subject: =?utf-8?b?" + b"A" * 10000 + b"?=\r\n\r\n",
        b'Content-Type: text/plain; charset="zlib_codec"\r\n\r\nx\xff',
        b"Content-Type: text/plain; charset*0*=utf-8''%ZZ; charset*x=1\r\n\r\nx",
        b"Date: Mon, 99 Foo 99999 99:99:99 +9999\r\nFrom: <<<@@@>>>,,,;;;\r\n\r\n",
        b"Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 f\r\n#86)C\r\n`\r\nend\r\n",
    ],
)
def test_hostile_input_never_raises(raw: bytes) -> None:
    assert isinstance(parse_message(raw), ParsedMessage)
    extract_part(raw, "1.1.1")


@pytest.mark.parametrize(
    "raw",
    [
        mail("Content-Type: text/html", "<style " * 40_000),
        mail("Content-Type: text/html", "<!-- " * 40_000),
        mail("Content-Type: text/html", "a < b " * 40_000),
        mail("Content-Type: text/html", "<br" * 40_000),
        mail("Content-Type: text/plain; name=" + '";' * 40_000, "x"),
        mail("To: " + " " * 100_000 + "x"),
        mail("To: x" + " " * 100_000 + "<"),
        mail("Subject: " + "=?" * 50_000),
        mail("Content-Type: multipart/mixed; boundary=b", "--b\n" + "--b " * 50_000),
    ],
)
def test_hostile_input_takes_linear_time(raw: bytes) -> None:
    # Quadratic behaviour on any of these takes minutes; linear takes milliseconds.
    started = time.process_time()
    parse_message(raw)
    assert time.process_time() - started < 2.0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_random_bytes_never_raise(raw: bytes) -> None:
    assert isinstance(parse_message(raw), ParsedMessage)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(NESTED) - 1), st.binary(min_size=1, max_size=20))
def test_damaged_messages_never_raise(position: int, junk: bytes) -> None:
    raw = NESTED[:position] + junk + NESTED[position + len(junk) :]
    parsed = parse_message(raw)
    for attachment in parsed.attachments:
        assert extract_part(raw, attachment.part_id) is not None


def test_non_bytes_input_is_reported_not_raised() -> None:
    parsed = parse_message("Subject: str, not bytes\n\nx")  # type: ignore[arg-type]
    assert (parsed.malformed, parsed.defects) == (True, ("UnparsableMessage",))


def test_thread_headers() -> None:
    parsed = parse_message(
        mail(
            """
Message-ID:  < abc@example.com >
In-Reply-To: <parent@example.com> (Anna's message of Monday)
References: <root@example.com> <parent@example.com>
 <root@example.com>
References: <other@example.com>
"""
        )
    )
    assert parsed.message_id == "abc@example.com"
    assert parsed.in_reply_to == "parent@example.com"
    assert parsed.references == ("root@example.com", "parent@example.com", "other@example.com")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Message-ID: bare-id@example.com", "bare-id@example.com"),
        ("Message-ID: <>", None),
        ("X-Other: 1", None),
    ],
)
def test_message_id_forms(raw: str, expected: str | None) -> None:
    assert parse_message(mail(raw)).message_id == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Mon, 20 Nov 1995 19:12:08 -0500", datetime(1995, 11, 21, 0, 12, 8, tzinfo=UTC)),
        ("20 Nov 95 19:12 GMT", datetime(1995, 11, 20, 19, 12, tzinfo=UTC)),
        ("Tue, 1 Jul 2003 10:52:37 -0000", datetime(2003, 7, 1, 10, 52, 37, tzinfo=UTC)),
        ("not a date", None),
        ("Mon, 31 Feb 2020 10:00:00 +0000", None),
    ],
)
def test_dates_are_aware_utc_or_none(raw: str, expected: datetime | None) -> None:
    assert parse_message(mail(f"Date: {raw}")).date == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Anna Smith <anna@example.com>", [("Anna Smith", "anna@example.com")]),
        ('"Smith, Anna" <anna@example.com>, bob@example.com',
         [("Smith, Anna", "anna@example.com"), ("", "bob@example.com")]),
        ("=?utf-8?q?M=C3=BCller=2C_J=C3=BCrgen?= <j@example.de>", [("Müller, Jürgen", "j@example.de")]),
        ("team: a@example.com, b@example.com;, c@example.com",
         [("", "a@example.com"), ("", "b@example.com"), ("", "c@example.com")]),
        ("undisclosed-recipients:;", []),
        ("anna@example.com (Anna Smith)", [("Anna Smith", "anna@example.com")]),
        ("J\xfcrgen <j@example.de>", [("Jürgen", "j@example.de")]),
    ],
)  # fmt: skip
def test_addresses(header: str, expected: list[tuple[str, str]]) -> None:
    raw = b"To: " + header.encode("latin-1") + b"\r\n\r\n"
    assert [(a.name, a.address) for a in parse_message(raw).to] == expected


def test_snippet_skips_quotes_and_signature() -> None:
    body = "Sounds good,   see you\nthen.\n\nOn Mon, Anna wrote:\n> old text\n> more\n-- \nBob\n"
    assert parse_message(mail("Subject: x", body)).snippet == "Sounds good, see you then."


def test_snippet_is_short() -> None:
    snippet = parse_message(mail("Subject: x", "word " * 500)).snippet
    assert 150 <= len(snippet) <= 200
    assert not snippet.endswith(" ")


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Re: Budget", "budget"),
        ("RE: re: Fwd: FW: Budget", "budget"),
        ("AW: SV: Fw: Budget", "budget"),
        ("Re[2]: Budget", "budget"),
        ("Re(3): Budget", "budget"),
        ("[dev-list] Re: [PATCH v2] Budget", "budget"),
        ("Re: [dev-list]   Budget   plan ", "budget plan"),
        ("Budget (fwd)", "budget"),
        ("Reply policy", "reply policy"),
        ("Re:", "re:"),
        ("", ""),
        ("GROẞE Straße", "grosse strasse"),
    ],
)
def test_normalize_subject(subject: str, expected: str) -> None:
    assert normalize_subject(subject) == expected


def test_generated_mailbox_parses_cleanly() -> None:
    parsed = [parse_message(raw) for raw in generate(300, seed=7)]
    assert not [p for p in parsed if p.malformed or p.defects]
    assert all(p.subject and p.from_ and p.date and p.message_id and p.snippet for p in parsed)
    with_attachments = sum(p.has_attachments for p in parsed)
    replies = [p for p in parsed if p.in_reply_to]
    assert 10 <= with_attachments <= 60
    assert 80 <= len(replies) <= 160
    ids = {p.message_id for p in parsed}
    assert len(ids) == 300
    assert all(p.in_reply_to in ids and p.references[-1] == p.in_reply_to for p in replies)
    assert all(p.subject.startswith("Re: ") for p in replies)
    assert sum(p.html_body is not None for p in parsed) >= 60
