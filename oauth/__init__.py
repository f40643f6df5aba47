"""OAuth2 for mail logins: providers configured by name, token refresh, and the authorization code flow.

Both processes use it (the sync core refreshes access tokens; the gateway runs the consent flow) and it imports
nothing of the project, like `ops`. Every request to a token endpoint goes through authlib's OAuth2 client
(`tokens`); `providers` reads the configuration; `errors` draws the tree of what can go wrong.
"""

from .errors import GrantRefused, OAuth2Error, ProviderNotConfigured, TokenEndpointUnavailable
from .providers import KNOWN, Provider, configured, provider
from .tokens import TokenSet, authorization_url, exchange_code, new_verifier, refresh

__all__ = [
    "KNOWN",
    "GrantRefused",
    "OAuth2Error",
    "Provider",
    "ProviderNotConfigured",
    "TokenEndpointUnavailable",
    "TokenSet",
    "authorization_url",
    "configured",
    "exchange_code",
    "new_verifier",
    "provider",
    "refresh",
]
