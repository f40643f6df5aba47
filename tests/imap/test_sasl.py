"""The OAuth2 SASL mechanisms as tables: the choice by what is advertised, the messages, the challenges."""

from __future__ import annotations

import base64

import pytest

from synccore.imap import sasl


@pytest.mark.parametrize(
    ("advertised", "expected"),
    [
        (["IMAP4rev1", "AUTH=PLAIN", "AUTH=XOAUTH2", "AUTH=OAUTHBEARER"], "OAUTHBEARER"),
        (["IMAP4rev1", "AUTH=XOAUTH2"], "XOAUTH2"),
        (["auth=xoauth2"], "XOAUTH2"),
        (["PLAIN", "LOGIN", "XOAUTH2"], "XOAUTH2"),  # SMTP's EHLO AUTH names
        (["OAUTHBEARER", "XOAUTH2"], "OAUTHBEARER"),
        (["IMAP4rev1", "AUTH=PLAIN", "SASL-IR"], None),
        ([], None),
    ],
)
def test_chooses_by_what_the_server_advertises(advertised: list[str], expected: str | None) -> None:
    assert sasl.choose(advertised) == expected


@pytest.mark.parametrize(
    ("mechanism", "user", "token", "host", "port", "expected"),
    [
        # Google's documented example (developers.google.com/gmail/imap/xoauth2-protocol)
        (
            "XOAUTH2",
            "someuser@example.com",
            "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg",
            None,
            None,
            b"user=someuser@example.com\x01auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01",
        ),
        # RFC 7628 §4.1's example
        (
            "OAUTHBEARER",
            "user@example.com",
            "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==",
            "server.example.com",
            143,
            b"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01"
            b"auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01",
        ),
        ("OAUTHBEARER", "a=b,c", "t", None, None, b"n,a=a=3Db=2Cc,\x01auth=Bearer t\x01\x01"),
    ],
)
def test_initial_responses(
    mechanism: sasl.Mechanism, user: str, token: str, host: str | None, port: int | None, expected: bytes
) -> None:
    assert sasl.initial_response(mechanism, user, token, host=host, port=port) == expected
    assert base64.b64decode(sasl.encoded_initial_response(mechanism, user, token, host=host, port=port)) == expected


@pytest.mark.parametrize(("user", "token"), [("a\x01b", "t"), ("a", "t\r\nA2 LOGOUT")])
def test_control_characters_are_refused(user: str, token: str) -> None:
    with pytest.raises(ValueError, match="control"):
        sasl.initial_response("XOAUTH2", user, token)


@pytest.mark.parametrize(
    ("mechanism", "expected"),
    [("XOAUTH2", b""), ("OAUTHBEARER", b"AQ==")],  # RFC 7628 §3.2.3: a lone %x01
)
def test_abort_responses(mechanism: sasl.Mechanism, expected: bytes) -> None:
    assert sasl.abort_response(mechanism) == expected


@pytest.mark.parametrize(
    ("challenge", "expected"),
    [
        (
            b"eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29vZ2xlLmNvbS8ifQ==",
            sasl.TokenChallenge("401", "https://mail.google.com/"),
        ),
        (base64.b64encode(b'{"status":"invalid_token"}'), sasl.TokenChallenge("invalid_token")),
        (base64.b64encode(b'{"status":403}'), sasl.TokenChallenge("403")),
        (b"not base64!", None),
        (base64.b64encode(b"[1, 2]"), None),
    ],
)
def test_reads_challenges(challenge: bytes, expected: sasl.TokenChallenge | None) -> None:
    assert sasl.read_challenge(challenge) == expected


def test_a_401_challenge_says_the_token_was_refused() -> None:
    assert sasl.TokenChallenge("401").token_invalid
    assert not sasl.TokenChallenge("403").token_invalid
