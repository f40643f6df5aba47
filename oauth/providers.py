"""OAuth2 providers, configured by name from the environment.

``INBOXQL_OAUTH2_<NAME>_CLIENT_ID``, ``_CLIENT_SECRET``, ``_TOKEN_URL``, ``_AUTHORIZE_URL`` and ``_SCOPES`` (space
separated) describe provider NAME. `google` and `microsoft` know their URLs and the scopes that IMAP and SMTP need,
so for them a client id and secret suffice; any setting given overrides the built-in one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from .errors import ProviderNotConfigured

PREFIX = "INBOXQL_OAUTH2_"
_SETTINGS = ("CLIENT_ID", "CLIENT_SECRET", "TOKEN_URL", "AUTHORIZE_URL", "SCOPES")


@dataclass(frozen=True, slots=True)
class Provider:
    """One OAuth2 client registration. `authorize_params` are extra query parameters of the consent URL."""

    name: str
    client_id: str
    client_secret: str = field(repr=False)
    token_url: str
    authorize_url: str | None
    scopes: tuple[str, ...]
    authorize_params: Mapping[str, str] = field(default_factory=dict)

    @property
    def scope(self) -> str:
        return " ".join(self.scopes)


@dataclass(frozen=True, slots=True)
class _Known:
    token_url: str
    authorize_url: str
    scopes: tuple[str, ...]
    authorize_params: Mapping[str, str]


KNOWN: Mapping[str, _Known] = {
    # developers.google.com/gmail/imap/xoauth2-protocol: one scope for IMAP, POP and SMTP. A refresh token comes
    # only with access_type=offline, and again after the first consent only with prompt=consent.
    "google": _Known(
        "https://oauth2.googleapis.com/token",
        "https://accounts.google.com/o/oauth2/v2/auth",
        ("https://mail.google.com/",),
        {"access_type": "offline", "prompt": "consent"},
    ),
    # learn.microsoft.com, "Authenticate an IMAP, POP or SMTP connection using OAuth": the Outlook resource's
    # scopes (Graph's do not work for IMAP), and offline_access for a refresh token.
    "microsoft": _Known(
        "https://login.microsoftonline.com/common/oauth2/v2.0/token",
        "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
        (
            "https://outlook.office.com/IMAP.AccessAsUser.All",
            "https://outlook.office.com/SMTP.Send",
            "offline_access",
        ),
        {},
    ),
}


def _key(name: str, setting: str) -> str:
    return f"{PREFIX}{name.upper()}_{setting}"


def provider(name: str, env: Mapping[str, str] | None = None) -> Provider:
    """The provider called `name` (case-insensitive), from `env` (default: the process environment)."""
    env = os.environ if env is None else env
    name = name.lower()
    if not name or not name.replace("_", "").isalnum():
        raise ProviderNotConfigured(f"{name!r} is not a provider name (letters, digits, underscores)")
    known = KNOWN.get(name)
    values = {s: env.get(_key(name, s), "").strip() for s in _SETTINGS}
    client_id = values["CLIENT_ID"]
    if not client_id:
        raise ProviderNotConfigured(f"OAuth2 provider {name!r} is not configured: set {_key(name, 'CLIENT_ID')}")
    token_url = values["TOKEN_URL"] or (known.token_url if known else "")
    if not token_url:
        raise ProviderNotConfigured(f"OAuth2 provider {name!r} has no token URL: set {_key(name, 'TOKEN_URL')}")
    scopes = tuple(values["SCOPES"].split()) or (known.scopes if known else ())
    return Provider(
        name=name,
        client_id=client_id,
        client_secret=values["CLIENT_SECRET"],
        token_url=token_url,
        authorize_url=values["AUTHORIZE_URL"] or (known.authorize_url if known else None),
        scopes=scopes,
        authorize_params=known.authorize_params if known else {},
    )


def configured(env: Mapping[str, str] | None = None) -> list[str]:
    """The names of the providers whose client id is set."""
    env = os.environ if env is None else env
    suffix = "_CLIENT_ID"
    return sorted(
        key[len(PREFIX) : -len(suffix)].lower()
        for key, value in env.items()
        if key.startswith(PREFIX) and key.endswith(suffix) and value.strip()
    )
