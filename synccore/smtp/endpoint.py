"""Where to submit: `SmtpEndpoint`, and `parse_smtp_url` for the `smtp://` / `smtps://` form."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["Security", "SmtpEndpoint", "is_loopback", "parse_smtp_url"]

Security = Literal["starttls", "tls", "plain"]
SECURITIES: tuple[Security, ...] = ("starttls", "tls", "plain")
# RFC 8314 §3: implicit TLS on 465; RFC 6409 §3.1: submission with STARTTLS on 587.
DEFAULT_PORTS: dict[str, tuple[Security, int]] = {"smtp": ("starttls", 587), "smtps": ("tls", 465)}


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class SmtpEndpoint:
    """A submission server. `security`: "starttls" (required, not opportunistic), "tls" (implicit, port 465) or
    "plain" (no TLS; refused with credentials unless the host is loopback). The certificate is verified against
    `ca_file` or the system's store unless `verify` is False. With `oauth2_token` the login is SASL OAUTHBEARER
    (RFC 7628) or XOAUTH2 as `username`."""

    host: str
    port: int
    security: Security = "starttls"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    verify: bool = True
    # An OAuth2 access token: AUTH OAUTHBEARER or XOAUTH2 (whichever EHLO advertises) instead of a password.
    oauth2_token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.security not in SECURITIES:
            raise ValueError(f"security must be one of {SECURITIES}, not {self.security!r}")
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} is out of range")
        if not self.host:
            raise ValueError("host is empty")
        if self.security == "plain" and self.username is not None and not is_loopback(self.host):
            raise ValueError(f"credentials for {self.host} would travel unencrypted: use starttls or tls")


def parse_smtp_url(url: str) -> SmtpEndpoint:
    """`smtp://user@host:587` -> an endpoint.

    smtp:// means STARTTLS, required (port 587 unless given); smtps:// means implicit TLS (port 465). `?insecure`
    turns TLS off, and only for a loopback host (a local test server). The user (and password, if any) are
    percent-decoded: `smtp://me%40example.com@host` logs in as `me@example.com`.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"{url!r}: the scheme must be smtp or smtps")
    security, default_port = DEFAULT_PORTS[scheme]
    host = parts.hostname
    if not host:
        raise ValueError(f"{url!r} names no host")
    if parts.path not in ("", "/") or parts.fragment:
        raise ValueError(f"{url!r}: an SMTP URL has no path or fragment")
    try:
        port = parts.port or default_port
    except ValueError as error:
        raise ValueError(f"{url!r}: {error}") from error
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = set(query) - {"insecure"}
    if unknown:
        raise ValueError(f"{url!r}: unknown parameters {sorted(unknown)}")
    if "insecure" in query:
        if scheme != "smtp" or not is_loopback(host):
            raise ValueError(f"{url!r}: ?insecure is only for smtp:// on a loopback host")
        security = "plain"
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    return SmtpEndpoint(host=host, port=port, security=security, username=username, password=password)
