"""Talking to a provider's endpoints through authlib's OAuth2 client: no token request is built by hand here.

`refresh` turns a refresh token into a fresh access token; `authorization_url` and `exchange_code` are the two
halves of the authorization code flow with PKCE (RFC 7636, S256). Every failure becomes an `errors` class that
says whether to retry; no message or log line holds a token.
"""

from __future__ import annotations

import secrets
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import httpx
from authlib.deprecate import AuthlibDeprecationWarning  # first: importing it puts an "always" filter in front

with warnings.catch_warnings():
    # authlib 1.9 prefers the httpx2 package and warns on import when it falls back to httpx, which the project
    # pins (the webhook deliverer uses it too). The fallback is what these tests exercise; the warning would only
    # reach every command's stderr.
    warnings.filterwarnings("ignore", "The httpx module is deprecated", AuthlibDeprecationWarning)
    from authlib.integrations.base_client.errors import OAuthError
    from authlib.integrations.httpx_client import AsyncOAuth2Client

from .errors import GrantRefused, TokenEndpointUnavailable
from .providers import Provider

# RFC 6749 §5.2 has no "try later" code, but providers send these (and RFC 6749 §4.1.2.1 defines them).
_TEMPORARY = frozenset({"temporarily_unavailable", "server_error"})
# Each request to a provider's endpoint (httpx: connect, read, write, pool).
HTTP_TIMEOUT = 30.0
DEFAULT_LIFETIME = 3600.0  # when the endpoint says nothing of expires_in (RFC 6749 §5.1: RECOMMENDED)


@dataclass(frozen=True, slots=True)
class TokenSet:
    """What a token endpoint granted. `refresh_token` is None when it kept the old one (no rotation)."""

    access_token: str = field(repr=False)
    expires_at: float  # epoch seconds
    refresh_token: str | None = field(default=None, repr=False)
    scope: str | None = None


def new_verifier() -> str:
    """An RFC 7636 §4.1 code verifier: 43-128 characters of the unreserved set (48 random bytes, base64url)."""
    return secrets.token_urlsafe(48)


def _client(provider: Provider, *, redirect_uri: str | None = None) -> AsyncOAuth2Client:
    return AsyncOAuth2Client(
        client_id=provider.client_id,
        client_secret=provider.client_secret or None,
        scope=provider.scope or None,
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
        # RFC 6749 §2.3.1: HTTP Basic is the method servers MUST support; a public client sends its id in the body.
        token_endpoint_auth_method="client_secret_basic" if provider.client_secret else "none",
        timeout=HTTP_TIMEOUT,
    )


def _token_set(token: dict[str, Any]) -> TokenSet:
    access = token.get("access_token")
    if not isinstance(access, str) or not access:
        raise TokenEndpointUnavailable("the token endpoint answered without an access token")
    expires_at = token.get("expires_at")
    if not isinstance(expires_at, int | float):
        expires_in = token.get("expires_in")
        lifetime = float(expires_in) if isinstance(expires_in, int | float | str) else DEFAULT_LIFETIME
        expires_at = time.time() + lifetime
    refresh_token = token.get("refresh_token")
    scope = token.get("scope")
    return TokenSet(
        access,
        float(expires_at),
        refresh_token if isinstance(refresh_token, str) and refresh_token else None,
        scope if isinstance(scope, str) else None,
    )


def _classified(error: Exception) -> Exception:
    if isinstance(error, OAuthError):
        if error.error in _TEMPORARY:
            return TokenEndpointUnavailable(f"{error.error}: {error.description or ''}".rstrip(": "))
        return GrantRefused(str(error.error), error.description)
    if isinstance(error, httpx.HTTPStatusError):
        return TokenEndpointUnavailable(f"the token endpoint answered HTTP {error.response.status_code}")
    return TokenEndpointUnavailable(f"the token endpoint could not be reached: {type(error).__name__}")


async def refresh(provider: Provider, refresh_token: str) -> TokenSet:
    """RFC 6749 §6: a new access token (and, where the provider rotates them, a new refresh token)."""
    async with _client(provider) as client:
        try:
            token = await client.refresh_token(provider.token_url, refresh_token=refresh_token)
        except (OAuthError, httpx.HTTPError, ValueError) as error:
            raise _classified(error) from None  # `from None`: the request's repr could show the token
    granted = _token_set(dict(token))
    if granted.refresh_token == refresh_token:
        return TokenSet(granted.access_token, granted.expires_at, None, granted.scope)
    return granted


def authorization_url(
    provider: Provider, redirect_uri: str, state: str, verifier: str, *, login_hint: str | None = None
) -> str:
    """The consent page's address (RFC 6749 §4.1.1) with `state` and the S256 code challenge of `verifier`;
    `login_hint` (OpenID Connect Core §3.1.2.1, honoured by Google and Microsoft) pre-fills the account."""
    extra = dict(provider.authorize_params)
    if login_hint:
        extra["login_hint"] = login_hint
    if provider.authorize_url is None:
        raise GrantRefused("unsupported", f"provider {provider.name!r} has no authorize URL")
    client = _client(provider, redirect_uri=redirect_uri)
    url, _ = client.create_authorization_url(provider.authorize_url, state=state, code_verifier=verifier, **extra)
    return str(url)


async def exchange_code(provider: Provider, code: str, redirect_uri: str, verifier: str) -> TokenSet:
    """RFC 6749 §4.1.3 with RFC 7636 §4.5's verifier: the tokens for an authorization code."""
    async with _client(provider, redirect_uri=redirect_uri) as client:
        try:
            token = await client.fetch_token(
                provider.token_url, grant_type="authorization_code", code=code, code_verifier=verifier
            )
        except (OAuthError, httpx.HTTPError, ValueError) as error:
            raise _classified(error) from None
    return _token_set(dict(token))
