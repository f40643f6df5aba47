"""synccore.smtp.endpoint: SMTP URLs and the endpoint's own checks."""

from __future__ import annotations

import pytest

from synccore.smtp import SmtpEndpoint, parse_smtp_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://mail.example.com", SmtpEndpoint("mail.example.com", 587, "starttls")),
        ("smtp://user@mail.example.com:587", SmtpEndpoint("mail.example.com", 587, "starttls", "user")),
        ("smtp://mail.example.com:2525", SmtpEndpoint("mail.example.com", 2525, "starttls")),
        ("smtps://mail.example.com", SmtpEndpoint("mail.example.com", 465, "tls")),
        ("SMTPS://Me@Mail.Example.com:10465", SmtpEndpoint("mail.example.com", 10465, "tls", "Me")),
        ("smtp://me%40example.com@mx.example", SmtpEndpoint("mx.example", 587, "starttls", "me@example.com")),
        ("smtp://me:p%40ss%3Aword@host.example", SmtpEndpoint("host.example", 587, "starttls", "me", "p@ss:word")),
        ("smtp://127.0.0.1:2525?insecure", SmtpEndpoint("127.0.0.1", 2525, "plain")),
        ("smtp://u@localhost:2525?insecure=1", SmtpEndpoint("localhost", 2525, "plain", "u")),
        ("smtp://[::1]:2525?insecure", SmtpEndpoint("::1", 2525, "plain")),
        ("smtp://[2001:db8::1]", SmtpEndpoint("2001:db8::1", 587, "starttls")),
        ("smtp://mail.example.com/", SmtpEndpoint("mail.example.com", 587, "starttls")),
    ],
)  # fmt: skip
def test_parses_smtp_urls(url: str, expected: SmtpEndpoint) -> None:
    assert parse_smtp_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "imap://mail.example.com",
        "http://mail.example.com",
        "smtp://",
        "smtp://mail.example.com?insecure",  # plain text only for a server on this machine
        "smtp://10.0.0.1:25?insecure",
        "smtps://127.0.0.1?insecure",  # smtps is TLS by definition
        "smtp://mail.example.com?tls=off",
        "smtp://mail.example.com/path",
        "smtp://mail.example.com:99999",
        "smtp://mail.example.com:port",
    ],
)
def test_refuses_bad_urls(url: str) -> None:
    with pytest.raises(ValueError, match=r"smtp|host|insecure|parameters|path|port|range"):
        parse_smtp_url(url)


def test_password_is_not_in_repr() -> None:
    assert "hunter2" not in repr(parse_smtp_url("smtp://me:hunter2@mail.example.com"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"host": "mail.example.com", "port": 25, "security": "plain", "username": "me"}, "unencrypted"),
        ({"host": "mail.example.com", "port": 587, "security": "ssl"}, "security"),
        ({"host": "mail.example.com", "port": 0}, "range"),
        ({"host": "", "port": 587}, "empty"),
    ],
)
def test_endpoint_refuses(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SmtpEndpoint(**kwargs)  # type: ignore[arg-type]


def test_plain_with_credentials_is_fine_on_loopback() -> None:
    assert SmtpEndpoint("127.0.0.1", 2525, "plain", "me", "pw").security == "plain"
