"""mime.parse: raw RFC 5322 bytes -> the fields the mirror stores; never raises, stays linear."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inboxql.mailgen import generate
from mime import Address, ParsedMessage, extract_part, parse_message
from tests.mime.support import NESTED, mail


def test_alternative_keeps_both_bodies() -> None:
    raw = mail(
        "Content-Type: multipart/alternative; boundary=alt",
        "--alt\nContent-Type: text/plain\n\nplain text\n--alt\nContent-Type: text/html\n\n<p>html text</p>\n--alt--\n",
    )
    parsed = parse_message(raw)
    assert (parsed.text_body, parsed.html_body) == ("plain text", "<p>html text</p>")
    assert parsed.attachments == ()


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
