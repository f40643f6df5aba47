"""synccore.smtp.submit against a real SMTP server (aiosmtpd, tests/smtp/server.py): what is delivered, and how
every failure is classified for a retry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from inboxql.devmail import free_port
from mime import Draft, Mailbox, compose, parse_message, recipients
from synccore.smtp import (
    SmtpAuthFailed,
    SmtpEndpoint,
    SmtpError,
    SmtpPermanent,
    SmtpTlsFailed,
    SmtpTransient,
    SmtpUncertain,
    submit,
)
from tests.smtp.server import PASSWORD, USERNAME, Certificates, Handler, make_certificates, smtp_server

MESSAGE = (
    b"From: me@example.com\r\nTo: you@example.org\r\nSubject: hello\r\n\r\n"
    b"first line\r\n.a line that starts with a dot\r\n..and two\r\n.\r\nlast line\r\n"
)


@pytest.fixture
def handler() -> Handler:
    return Handler(slow_seconds=2.0)


@pytest.fixture
def plain_port(handler: Handler) -> Iterator[int]:
    with smtp_server(handler) as port:
        yield port


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("smtp-tls"))


def plain(port: int) -> SmtpEndpoint:
    return SmtpEndpoint("127.0.0.1", port, "plain")


async def test_delivers_the_exact_bytes_and_envelope(handler: Handler, plain_port: int) -> None:
    result = await submit(plain(plain_port), "me@example.com", ["you@example.org", "cc@example.net"], MESSAGE)
    assert (result.accepted, dict(result.refused), result.code) == (("you@example.org", "cc@example.net"), {}, 250)
    assert "TEST123" in result.text
    (received,) = handler.received
    assert received.mail_from == "me@example.com"
    assert received.rcpt_tos == ["you@example.org", "cc@example.net"]
    assert received.content == MESSAGE  # dot-stuffed on the wire, unstuffed by the server


async def test_delivers_a_composed_message_without_its_bcc(handler: Handler, plain_port: int) -> None:
    draft = Draft(
        sender=Mailbox("me@example.com", "Zoë"),
        to=(Mailbox("you@example.org"),),
        bcc=(Mailbox("hidden@example.net"),),
        subject="Grüße",
        text="Hallo\n",
    )
    raw = compose(draft)
    result = await submit(plain(plain_port), draft.sender.address, recipients(draft), raw)
    assert result.accepted == ("you@example.org", "hidden@example.net")
    (received,) = handler.received
    assert received.content == raw
    parsed = parse_message(received.content)
    assert (parsed.subject, parsed.bcc, parsed.from_[0].name) == ("Grüße", (), "Zoë")


async def test_some_recipients_refused_are_reported(handler: Handler, plain_port: int) -> None:
    result = await submit(
        plain(plain_port), "me@example.com", ["ok@example.org", "nobody@example.org", "busy@example.org"], MESSAGE
    )
    assert result.accepted == ("ok@example.org",)
    assert {address: code for address, (code, _) in result.refused.items()} == {
        "nobody@example.org": 550,
        "busy@example.org": 450,
    }
    assert "No such user" in result.refused["nobody@example.org"][1]
    assert handler.received[0].rcpt_tos == ["ok@example.org"]


@pytest.mark.parametrize(
    ("rcpts", "error", "code"),
    [
        (["busy@example.org"], SmtpTransient, 450),  # 4xx on RCPT
        (["nobody@example.org"], SmtpPermanent, 550),  # 5xx on RCPT
        (["nobody@example.org", "busy@example.org"], SmtpTransient, 450),  # one of them may work later
        (["reject@example.org"], SmtpPermanent, 554),  # 5xx after DATA
        (["later@example.org"], SmtpTransient, 451),  # 4xx after DATA
    ],
)
async def test_refusals_are_classified_by_reply_code(
    plain_port: int, rcpts: list[str], error: type[SmtpError], code: int
) -> None:
    with pytest.raises(error) as raised:
        await submit(plain(plain_port), "me@example.com", rcpts, MESSAGE)
    assert type(raised.value) is error
    assert raised.value.code == code


async def test_every_recipient_refused_lists_them(plain_port: int) -> None:
    with pytest.raises(SmtpPermanent) as raised:
        await submit(plain(plain_port), "me@example.com", ["nobody@example.org"], MESSAGE)
    assert list(raised.value.refused) == ["nobody@example.org"]


async def test_connection_dropped_before_data_is_transient(handler: Handler, plain_port: int) -> None:
    with pytest.raises(SmtpTransient):
        await submit(plain(plain_port), "me@example.com", ["drop@example.org"], MESSAGE)
    assert handler.received == []


async def test_connection_dropped_after_the_payload_is_uncertain(handler: Handler, plain_port: int) -> None:
    with pytest.raises(SmtpUncertain):
        await submit(plain(plain_port), "me@example.com", ["vanish@example.org"], MESSAGE)
    assert [received.content for received in handler.received] == [MESSAGE]  # why it is uncertain: it arrived


async def test_no_final_reply_in_time_is_uncertain(handler: Handler, plain_port: int) -> None:
    with pytest.raises(SmtpUncertain):
        await submit(plain(plain_port), "me@example.com", ["slow@example.org"], MESSAGE, final_timeout=0.5)
    assert len(handler.received) == 1


async def test_connection_refused_is_transient() -> None:
    with pytest.raises(SmtpTransient):
        await submit(plain(free_port()), "me@example.com", ["you@example.org"], MESSAGE, timeout=5)


# --- TLS and AUTH -------------------------------------------------------------------------------


async def test_starttls_and_auth_plain(handler: Handler, certificates: Certificates) -> None:
    with smtp_server(handler, starttls=certificates.server_context()) as port:
        endpoint = SmtpEndpoint("127.0.0.1", port, "starttls", USERNAME, PASSWORD, ca_file=str(certificates.ca_file))
        result = await submit(endpoint, USERNAME, ["you@example.org"], MESSAGE)
    assert result.accepted == ("you@example.org",)
    assert handler.received[0].content == MESSAGE


async def test_implicit_tls(handler: Handler, certificates: Certificates) -> None:
    with smtp_server(handler, implicit_tls=certificates.server_context()) as port:
        endpoint = SmtpEndpoint("127.0.0.1", port, "tls", USERNAME, PASSWORD, ca_file=str(certificates.ca_file))
        result = await submit(endpoint, USERNAME, ["you@example.org"], MESSAGE)
    assert result.accepted == ("you@example.org",)


async def test_wrong_password_is_auth_failed(handler: Handler, certificates: Certificates) -> None:
    with smtp_server(handler, starttls=certificates.server_context()) as port:
        endpoint = SmtpEndpoint("127.0.0.1", port, "starttls", USERNAME, "wrong", ca_file=str(certificates.ca_file))
        with pytest.raises(SmtpAuthFailed) as raised:
            await submit(endpoint, USERNAME, ["you@example.org"], MESSAGE)
    assert raised.value.code == 535
    assert handler.received == []


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_untrusted_certificate_is_refused(
    handler: Handler, certificates: Certificates, tmp_path: Path, security: str
) -> None:
    stranger = make_certificates(tmp_path, "stranger")  # a CA that did not sign the server's certificate
    context = certificates.server_context()
    servers = {"starttls": {"starttls": context}, "tls": {"implicit_tls": context}}
    with smtp_server(handler, **servers[security]) as port:
        for ca_file in (str(stranger.ca_file), None):  # neither another CA nor the system's store trusts it
            endpoint = SmtpEndpoint("127.0.0.1", port, security, USERNAME, PASSWORD, ca_file=ca_file)  # type: ignore[arg-type]
            with pytest.raises(SmtpTlsFailed, match="certificate verify failed"):
                await submit(endpoint, USERNAME, ["you@example.org"], MESSAGE, timeout=5)
    assert handler.received == []


async def test_host_name_must_match_the_certificate(handler: Handler, tmp_path: Path) -> None:
    elsewhere = make_certificates(tmp_path, "elsewhere", names=("mail.example.com",))  # trusted, wrong name
    with smtp_server(handler, starttls=elsewhere.server_context()) as port:
        endpoint = SmtpEndpoint("127.0.0.1", port, "starttls", ca_file=str(elsewhere.ca_file))
        with pytest.raises(SmtpTlsFailed, match="certificate verify failed"):
            await submit(endpoint, USERNAME, ["you@example.org"], MESSAGE, timeout=5)
        # The same server and CA with verification off (an explicit choice, never from a URL) goes through.
        unverified = SmtpEndpoint("127.0.0.1", port, "starttls", ca_file=str(elsewhere.ca_file), verify=False)
        assert (await submit(unverified, USERNAME, ["you@example.org"], MESSAGE, timeout=5)).accepted


async def test_starttls_required_but_not_offered(handler: Handler, plain_port: int) -> None:
    endpoint = SmtpEndpoint("127.0.0.1", plain_port, "starttls")
    with pytest.raises(SmtpTlsFailed, match="STARTTLS"):
        await submit(endpoint, "me@example.com", ["you@example.org"], MESSAGE)
    assert handler.received == []
