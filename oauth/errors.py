"""What can go wrong with a provider, by what it means for a retry::

    OAuth2Error
    ├── ProviderNotConfigured       no INBOXQL_OAUTH2_<NAME>_* for that name (an operator's fix)
    ├── GrantRefused                the token endpoint refused the grant (RFC 6749 §5.2: invalid_grant, a revoked
    │                               or expired refresh token, a code for another client): only a new consent helps
    └── TokenEndpointUnavailable    no answer, a 5xx, or temporarily_unavailable: try again after a backoff

Messages never hold a token: only the endpoint's error code and description.
"""

from __future__ import annotations


class OAuth2Error(Exception):
    """Base class of every error raised by `oauth`."""


class ProviderNotConfigured(OAuth2Error):
    """The provider's name is unknown or misses a setting."""


class GrantRefused(OAuth2Error):
    """The token endpoint answered with an RFC 6749 §5.2 error: the grant is no good any more."""

    def __init__(self, error: str, description: str | None = None) -> None:
        self.error = error
        self.description = description
        super().__init__(f"{error}: {description}" if description else error)


class TokenEndpointUnavailable(OAuth2Error):
    """The token endpoint could not be asked now (network, 5xx, temporarily_unavailable)."""
