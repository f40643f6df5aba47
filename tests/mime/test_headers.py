"""mime.headers: RFC 2047 words, addresses, message ids and dates, read through parse_message."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mime import parse_message
from tests.mime.support import mail


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
