"""mime.subjects: reply prefixes and the normalized subject."""

from __future__ import annotations

import pytest

from mime import is_reply, normalize_subject


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


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Re: Budget", True),
        ("AW: Budget", True),
        ("Fwd: Budget", True),
        ("[list] Re: Budget", True),
        ("Re[2]: Budget", True),
        ("Reply policy", False),
        ("Budget Re: later", False),
        ("", False),
    ],
)
def test_is_reply(subject: str, expected: bool) -> None:
    assert is_reply(subject) is expected
