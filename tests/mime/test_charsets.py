"""mime.charsets: declared, wrong and unknown charsets all come out as text."""

from __future__ import annotations

import pytest

from mime import parse_message
from mime.charsets import decode_bytes
from tests.mime.support import mail


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


@pytest.mark.parametrize(
    ("data", "charset", "expected", "defects"),
    [
        (b"plain", "x-nonsense", "plain", ["UnknownCharset"]),
        ("é".encode(), None, "é", []),
        ("é".encode("cp1252"), "utf-8", "é", ["CharsetMismatch"]),
        ("€".encode("cp1252"), "iso-8859-1", "€", []),  # latin-1 labels mean cp1252
        ("日本".encode("euc-jp"), "EUC-JP", "日本", []),
        (b"\xff\xfe\xfd", "utf-8", "ÿþý", ["CharsetMismatch"]),
        pytest.param(
            b"x",
            "unicode_escape",
            "x",
            ["UnknownCharset"],
            # _REFUSED_CODECS spells these with "_", codecs.lookup() names them with "-": not refused yet.
            marks=pytest.mark.xfail(strict=True, reason="unicode_escape is taken as a charset"),
        ),
    ],
)
def test_decode_bytes_never_fails(data: bytes, charset: str | None, expected: str, defects: list[str]) -> None:
    found: list[str] = []
    assert decode_bytes(data, charset, found) == expected
    assert found == defects
