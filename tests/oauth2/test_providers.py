"""Providers configured by name from the environment, and the consent URL's PKCE: tables, no network."""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import parse_qs, urlsplit

import pytest

import oauth


def test_google_and_microsoft_know_their_urls_and_mail_scopes() -> None:
    env = {
        "INBOXQL_OAUTH2_GOOGLE_CLIENT_ID": "g-id",
        "INBOXQL_OAUTH2_GOOGLE_CLIENT_SECRET": "g-secret",
        "INBOXQL_OAUTH2_MICROSOFT_CLIENT_ID": "m-id",
    }
    google = oauth.provider("google", env)
    assert (google.client_id, google.client_secret) == ("g-id", "g-secret")
    assert google.token_url == "https://oauth2.googleapis.com/token"
    assert google.scopes == ("https://mail.google.com/",)
    microsoft = oauth.provider("Microsoft", env)
    assert microsoft.token_url == "https://login.microsoftonline.com/common/oauth2/v2.0/token"
    assert microsoft.scopes == (
        "https://outlook.office.com/IMAP.AccessAsUser.All",
        "https://outlook.office.com/SMTP.Send",
        "offline_access",
    )
    assert oauth.configured(env) == ["google", "microsoft"]


def test_settings_override_the_built_in_ones_and_name_any_provider() -> None:
    env = {
        "INBOXQL_OAUTH2_GOOGLE_CLIENT_ID": "g",
        "INBOXQL_OAUTH2_GOOGLE_SCOPES": "https://mail.google.com/ openid email",
        "INBOXQL_OAUTH2_CORP_IDP_CLIENT_ID": "c",
        "INBOXQL_OAUTH2_CORP_IDP_TOKEN_URL": "https://idp.example/token",
    }
    assert oauth.provider("google", env).scopes == ("https://mail.google.com/", "openid", "email")
    corp = oauth.provider("corp_idp", env)
    assert (corp.token_url, corp.authorize_url, corp.scopes) == ("https://idp.example/token", None, ())


@pytest.mark.parametrize(
    ("name", "env", "problem"),
    [
        ("google", {}, "INBOXQL_OAUTH2_GOOGLE_CLIENT_ID"),
        ("corp", {"INBOXQL_OAUTH2_CORP_CLIENT_ID": "c"}, "INBOXQL_OAUTH2_CORP_TOKEN_URL"),
        ("../etc", {}, "not a provider name"),
        ("", {}, "not a provider name"),
    ],
)
def test_a_provider_not_configured_is_a_typed_error(name: str, env: dict[str, str], problem: str) -> None:
    with pytest.raises(oauth.ProviderNotConfigured, match=problem.replace(".", r"\.")):
        oauth.provider(name, env)


def test_the_client_secret_is_not_in_the_repr() -> None:
    found = oauth.provider(
        "google", {"INBOXQL_OAUTH2_GOOGLE_CLIENT_ID": "g", "INBOXQL_OAUTH2_GOOGLE_CLIENT_SECRET": "s3"}
    )
    assert "s3" not in repr(found)


def test_the_consent_url_carries_state_an_s256_challenge_and_the_login_hint() -> None:
    google = oauth.provider("google", {"INBOXQL_OAUTH2_GOOGLE_CLIENT_ID": "g"})
    verifier = oauth.new_verifier()
    assert 43 <= len(verifier) <= 128  # RFC 7636 §4.1
    url = oauth.authorization_url(google, "https://gw.example/cb", "st", verifier, login_hint="me@example.com")
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    expected = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    assert query["code_challenge"] == expected  # RFC 7636 §4.2 S256
    assert query["code_challenge_method"] == "S256"
    assert query["state"] == "st"
    assert query["login_hint"] == "me@example.com"
    assert (query["access_type"], query["prompt"]) == ("offline", "consent")  # Google's way to a refresh token
    assert query["scope"] == "https://mail.google.com/"
    assert verifier not in url
