"""mime.snippets: the preview line."""

from __future__ import annotations

from mime import parse_message
from tests.mime.support import mail


def test_snippet_skips_quotes_and_signature() -> None:
    body = "Sounds good,   see you\nthen.\n\nOn Mon, Anna wrote:\n> old text\n> more\n-- \nBob\n"
    assert parse_message(mail("Subject: x", body)).snippet == "Sounds good, see you then."


def test_snippet_is_short() -> None:
    snippet = parse_message(mail("Subject: x", "word " * 500)).snippet
    assert 150 <= len(snippet) <= 200
    assert not snippet.endswith(" ")
