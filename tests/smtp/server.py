"""A real SMTP server for the submission tests (aiosmtpd in its own thread), and certificates made on the spot.

The handler acts on the recipient's local part, so one server plays every scene:

    busy@      RCPT answered 450 (transient)         nobody@     RCPT answered 550 (permanent)
    drop@      connection aborted at RCPT            reject@     DATA answered 554 after the payload
    later@     DATA answered 451 after the payload   vanish@     payload received, then the connection aborted
    slow@      payload received, the reply held back longer than the client waits
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from inboxql.devmail import free_port

USERNAME = "me@example.com"
PASSWORD = "s3cret pass"


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes


@dataclass
class Handler:
    received: list[Received] = field(default_factory=list)
    slow_seconds: float = 3.0
    busy_refusals: int | None = None  # how many times busy@ is refused (450) before it is taken; None: always
    logins: int = 0  # AUTHs that succeeded
    senders: list[str] = field(default_factory=list)  # MAIL FROM, in order

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        result = authenticate(server, session, envelope, mechanism, auth_data)
        self.logins += bool(result.success)
        return result

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        self.senders.append(address)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        local = address.partition("@")[0]
        if local == "busy" and (self.busy_refusals is None or self.busy_refusals > 0):
            if self.busy_refusals is not None:
                self.busy_refusals -= 1
            return "450 4.2.1 Mailbox busy, try later"
        if local == "nobody":
            return "550 5.1.1 No such user here"
        if local == "drop":
            assert isinstance(server.transport, asyncio.Transport)
            server.transport.abort()
            return "250 OK"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        self.received.append(Received(str(envelope.mail_from), list(envelope.rcpt_tos), content))
        locals_ = {address.partition("@")[0] for address in envelope.rcpt_tos}
        if "reject" in locals_:
            return "554 5.6.0 Message content rejected"
        if "later" in locals_:
            return "451 4.3.0 Queue full, try later"
        if "vanish" in locals_:
            assert isinstance(server.transport, asyncio.Transport)
            server.transport.abort()
            return "250 OK"
        if "slow" in locals_:
            await asyncio.sleep(self.slow_seconds)
        return "250 2.0.0 Ok: queued as TEST123"


def authenticate(server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any) -> AuthResult:
    if isinstance(auth_data, LoginPassword):
        ok = auth_data.login == USERNAME.encode() and auth_data.password == PASSWORD.encode()
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself
    return AuthResult(success=False, handled=False)


@dataclass(frozen=True)
class Certificates:
    ca_file: Path  # trust this to verify the server
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_certificates(
    directory: Path, label: str = "test", names: tuple[str, ...] = ("localhost", "127.0.0.1")
) -> Certificates:
    """A throwaway CA and a server certificate it signed for `names` (host names or IP addresses)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"inboxql {label} CA"))
        .issuer_name(_name(f"inboxql {label} CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([_general_name(name) for name in names]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    certificates = Certificates(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    certificates.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    certificates.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    certificates.key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return certificates


@contextmanager
def smtp_server(
    handler: Handler, *, starttls: ssl.SSLContext | None = None, implicit_tls: ssl.SSLContext | None = None
) -> Iterator[int]:
    """Serve on 127.0.0.1; yields the port. With `starttls`, STARTTLS is required and AUTH offered after it."""
    port = free_port()
    kwargs: dict[str, Any] = {"auth_exclude_mechanism": ["LOGIN"]}  # AUTH PLAIN, what the client must use
    if starttls is not None:
        kwargs.update(tls_context=starttls, require_starttls=True, authenticator=handler.authenticate)
    if implicit_tls is not None:
        # aiosmtpd cannot tell that an implicit TLS session is TLS: let it offer AUTH anyway.
        kwargs.update(ssl_context=implicit_tls, authenticator=handler.authenticate, auth_require_tls=False)
    controller = Controller(handler, hostname="127.0.0.1", port=port, ready_timeout=10, **kwargs)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()
