"""mime.html: html mail -> readable text."""

from __future__ import annotations

import pytest

from mime import html_to_text, parse_message
from tests.mime.support import mail


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


@pytest.mark.parametrize(
    ("markup", "expected"),
    [
        ("<p>one</p><p>two</p>", "one\n\ntwo"),
        ("a<br>b<br/>c", "a\nb\nc"),
        ("<!-- hidden --><b>shown</b>", "shown"),
        ("<style>x{}</style>kept", "kept"),
        ("<script>never closed", ""),
        ("caf&eacute; &lt;tag&gt;", "café <tag>"),
        ("a < b", "a < b"),
        ("  spaced \t\xa0 out  ", "spaced out"),
    ],
)
def test_html_to_text(markup: str, expected: str) -> None:
    assert html_to_text(markup) == expected
