"""The private Postfix (inboxql.devsmtp): submission with STARTTLS and AUTH, delivery into Dovecot by LMTP.

A real client (aiosmtplib) submits; a plain imaplib client reads what Dovecot stored.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import imaplib
import secrets
import ssl
import statistics
import time
from email.message import EmailMessage

import aiosmtplib
import pytest

from inboxql.devmail import DovecotServer
from inboxql.devsmtp import PostfixServer
from tests.conftest import new_user


def tls_context(server: PostfixServer) -> ssl.SSLContext:
    """Verifies the server against the Dovecot test CA (and its name, 127.0.0.1): nothing unverified."""
    return ssl.create_default_context(cafile=str(server.ca_file))


def submission(server: PostfixServer) -> aiosmtplib.SMTP:
    return aiosmtplib.SMTP(
        hostname=server.host, port=server.port, start_tls=True, tls_context=tls_context(server), timeout=10
    )


def inbox_messages(dovecot: DovecotServer, user: str, password: str) -> list[bytes]:
    imap = imaplib.IMAP4(dovecot.host, dovecot.port)
    try:
        imap.login(user, password)
        imap.select("INBOX", readonly=True)
        _, data = imap.fetch("1:*", "(BODY.PEEK[])") if _count(imap) else ("OK", [])
        return [item[1] for item in data if isinstance(item, tuple)]
    finally:
        imap.logout()


def _count(imap: imaplib.IMAP4) -> int:
    _, data = imap.status("INBOX", "(MESSAGES)")
    raw = data[0]
    assert isinstance(raw, bytes)
    return int(raw.rsplit(b"MESSAGES ", 1)[1].rstrip(b")"))


def wait_for_inbox(dovecot: DovecotServer, user: str, password: str, count: int, timeout: float = 5.0) -> float:
    """Poll INBOX's message count until it reaches `count`; returns the monotonic time it was seen."""
    imap = imaplib.IMAP4(dovecot.host, dovecot.port)
    try:
        imap.login(user, password)
        deadline = time.monotonic() + timeout
        while (seen := _count(imap)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{user}'s INBOX has {seen} messages after {timeout}s, not {count}")
            time.sleep(0.002)
        return time.monotonic()
    finally:
        imap.logout()


def composed(sender: str, to: str, bcc: str, subject: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Bcc"] = bcc
    msg["Subject"] = subject
    msg.set_content("Sent through the private Postfix.\n")
    return msg.as_bytes(policy=email.policy.SMTP)


async def test_submission_delivers_to_recipient_and_bcc_without_bcc_header(
    postfix: PostfixServer, dovecot: DovecotServer
) -> None:
    alice, alice_pw = new_user(dovecot)
    bob, bob_pw = new_user(dovecot)
    carol, carol_pw = new_user(dovecot)
    subject = f"hello {secrets.token_hex(4)}"
    # The Bcc header goes to the server on purpose (aiosmtplib's send_message would drop it itself): Postfix
    # must deliver to the Bcc recipient from the envelope and strip the header from every copy.
    raw = composed(dovecot.address(alice), dovecot.address(bob), dovecot.address(carol), subject)
    async with submission(postfix) as smtp:
        await smtp.auth_plain(alice, alice_pw)
        errors, _ = await smtp.sendmail(dovecot.address(alice), [dovecot.address(bob), dovecot.address(carol)], raw)
        assert errors == {}

    for user, password in ((bob, bob_pw), (carol, carol_pw)):
        await asyncio.to_thread(wait_for_inbox, dovecot, user, password, 1)
        [delivered] = await asyncio.to_thread(inbox_messages, dovecot, user, password)
        parsed = email.message_from_bytes(delivered, policy=email.policy.default)
        assert parsed["Subject"] == subject
        assert parsed["To"] == dovecot.address(bob)
        assert parsed["Bcc"] is None
        assert b"\nbcc:" not in delivered.lower()
        assert "ESMTPSA" in delivered.decode(errors="replace")  # submitted over TLS, authenticated
    assert f"sasl_username={alice}" in postfix.log()


async def test_submit_to_inbox_latency(
    postfix: PostfixServer, dovecot: DovecotServer, capsys: pytest.CaptureFixture[str]
) -> None:
    alice, alice_pw = new_user(dovecot)
    bob, bob_pw = new_user(dovecot)
    samples = []
    async with submission(postfix) as smtp:
        await smtp.auth_plain(alice, alice_pw)
        for n in range(1, 11):
            raw = composed(dovecot.address(alice), dovecot.address(bob), dovecot.address(alice), f"timing {n}")
            started = time.monotonic()
            await smtp.sendmail(dovecot.address(alice), [dovecot.address(bob)], raw)
            seen = await asyncio.to_thread(wait_for_inbox, dovecot, bob, bob_pw, n)
            samples.append((seen - started) * 1000)
    with capsys.disabled():
        print(
            f"\nsubmit -> INBOX (DATA sent to message counted over IMAP), {len(samples)} messages: "
            f"median {statistics.median(samples):.0f} ms, max {max(samples):.0f} ms"
        )
    assert statistics.median(samples) < 1000


async def test_wrong_password_is_refused_with_535(postfix: PostfixServer, dovecot: DovecotServer) -> None:
    alice, _ = new_user(dovecot)
    async with submission(postfix) as smtp:
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as refused:
            await smtp.auth_plain(alice, "not-the-password")
    assert refused.value.code == 535


@pytest.mark.parametrize("domain", ["example.com", None])
async def test_unauthenticated_client_may_not_send(
    postfix: PostfixServer, dovecot: DovecotServer, domain: str | None
) -> None:
    """Neither relaying elsewhere nor delivering here without logging in (even over TLS)."""
    bob, _ = new_user(dovecot)
    recipient = f"someone@{domain}" if domain else dovecot.address(bob)
    async with submission(postfix) as smtp:
        await smtp.mail("stranger@example.com")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
            await smtp.rcpt(recipient)
    assert refused.value.code == 554


async def test_auth_before_starttls_is_refused(postfix: PostfixServer, dovecot: DovecotServer) -> None:
    alice, alice_pw = new_user(dovecot)
    async with aiosmtplib.SMTP(hostname=postfix.host, port=postfix.port, start_tls=False, timeout=10) as smtp:
        assert not smtp.supports_extension("auth")  # not even offered in plaintext
        token = base64.b64encode(f"\0{alice}\0{alice_pw}".encode()).decode()
        response = await smtp.execute_command(b"AUTH", b"PLAIN", token.encode())
        assert response.code == 530, response  # 5.7.0 Must issue a STARTTLS command first
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            await smtp.mail(dovecot.address(alice))
        assert refused.value.code == 530
