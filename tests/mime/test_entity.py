"""mime.entity: the MIME tree, RFC 2231 parameters, transfer decoding, broken structure flagged."""

from __future__ import annotations

import base64

import pytest

from mime import parse_message
from tests.mime.support import mail


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
        ("attachment; filename*=utf-8''%E6%97%A5%E6%9C%AC.txt", "日本.txt"),  # past U+00FF
        ("attachment; filename*=koi8-r''%F0%D2%C9%D7%C5%D4.txt", "Привет.txt"),
        ("attachment; filename*=utf-8''%C3%82%C2%A0x.txt", "Â x.txt"),  # decoded once, not twice
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
