"""OAuth2 fixtures: the test authorization server (tests.oauth2server), a Dovecot whose oauth2 passdb asks it, and
a guard that fails any test whose logs (ours, Dovecot's) hold a token, a code or a refresh token it issued."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from inboxql.devmail import DovecotServer
from inboxql.devsmtp import PostfixServer
from schema.crypto import CredentialBox
from schema.unit import Store
from synccore.tokens import TokenKeeper
from tests.oauth2server import AuthServer

PROVIDER = "testidp"
CLIENT = ("inboxql", "inboxql-client-secret")
OTHER_CLIENT = ("another-app", "another-app-secret")


@pytest.fixture(scope="session")
def auth_server() -> Iterator[AuthServer]:
    with AuthServer() as server:
        server.add_client(*CLIENT)
        server.add_client(*OTHER_CLIENT)
        yield server


@pytest.fixture(scope="session")
def oauth_dovecot(auth_server: AuthServer) -> Iterator[DovecotServer]:
    """Dovecot accepting passwords and, through its oauth2 passdb, access tokens the authorization server vouches
    for (XOAUTH2 and OAUTHBEARER)."""
    root = Path(tempfile.mkdtemp(prefix="inboxql-dovecot-oauth2-"))
    server = DovecotServer(root, oauth2_introspection=auth_server.introspection_url)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def oauth_postfix(oauth_dovecot: DovecotServer) -> Iterator[PostfixServer]:
    """Postfix taking submissions with SASL through `oauth_dovecot`'s auth service: XOAUTH2 and OAUTHBEARER too."""
    root = Path(tempfile.mkdtemp(prefix="inboxql-postfix-oauth2-"))
    with PostfixServer(root, oauth_dovecot) as server:
        yield server
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def provider_env(auth_server: AuthServer) -> dict[str, str]:
    return auth_server.env(PROVIDER, CLIENT[0])


@pytest.fixture
def oauth_user(oauth_dovecot: DovecotServer, auth_server: AuthServer) -> tuple[str, str]:
    """A mailbox user who can also sign in at the authorization server (same name and password)."""
    user, password = f"o{secrets.token_hex(5)}", secrets.token_urlsafe(12)
    oauth_dovecot.add_user(user, password)
    auth_server.add_user(user, password)
    return user, password


@pytest.fixture(autouse=True)
def short_tokens(auth_server: AuthServer) -> Iterator[None]:
    """Every test starts with hour-long access tokens; tests that want expiry set it shorter."""
    auth_server.state.access_lifetime = 3600
    yield
    auth_server.state.access_lifetime = 3600


# Set while a test plays the user's browser or the provider: what the test's own HTTP client logs then (URLs with
# codes, redirects) is the browser's, not inboxql's. Read by a filter in the emitting task, so the gateway's and
# the sync core's records, in other threads and tasks, are still checked.
_BROWSER: contextvars.ContextVar[bool] = contextvars.ContextVar("browser", default=False)


@contextlib.contextmanager
def as_browser() -> Iterator[None]:
    reset = _BROWSER.set(True)
    try:
        yield
    finally:
        _BROWSER.reset(reset)


class _MarkBrowser(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.browser_side = _BROWSER.get()
        return True


_PROVIDER_LOGGERS = (
    "authlib.oauth2.rfc6749.grants",
    "authlib.oauth2.rfc6749.authenticate_client",
    "authlib.oauth2.rfc6749.authorization_server",
    "authlib.oauth2.rfc7009",
    "authlib.oauth2.rfc7636",
    "authlib.oauth2.rfc7662",
)


def issued_secrets(auth_server: AuthServer) -> set[str]:
    found: set[str] = set(auth_server.state.codes)
    for token in auth_server.state.tokens:
        found.add(token.access_token)
        if token.refresh_token:
            found.add(token.refresh_token)
    return found | set(auth_server.spent_codes)


@pytest.fixture(autouse=True)
def no_token_in_logs(
    auth_server: AuthServer, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> Iterator[None]:
    """Every log record of the test (at DEBUG, every logger), and Dovecot's log, hold none of the tokens or codes
    the authorization server issued."""
    caplog.set_level(logging.DEBUG)
    marker = _MarkBrowser()
    caplog.handler.addFilter(marker)
    dovecot: DovecotServer | None = None
    if "oauth_dovecot" in request.fixturenames:
        dovecot = request.getfixturevalue("oauth_dovecot")
    offset = dovecot.log_file.stat().st_size if dovecot is not None and dovecot.log_file.exists() else 0
    yield
    # The authorization server's own components (authlib's grants and endpoints) log what they issue at DEBUG:
    # those are the provider's logs, not inboxql's. authlib's client side is checked like the rest.
    records = [*caplog.get_records("setup"), *caplog.get_records("call")]  # (caplog.records: this phase's only)
    caplog.handler.removeFilter(marker)
    ours = [r for r in records if not r.name.startswith(_PROVIDER_LOGGERS) and not getattr(r, "browser_side", False)]
    texts = [(record.name, record.getMessage() + str(record.args)) for record in ours]
    if dovecot is not None and dovecot.log_file.exists():
        with dovecot.log_file.open(errors="replace") as log:
            log.seek(offset)
            texts.append(("dovecot", log.read()))
    secrets_issued = issued_secrets(auth_server)
    where = sorted({name for name, text in texts if any(s in text for s in secrets_issued)})
    assert not where, f"tokens or codes appear in the logs of {where}"


@pytest.fixture
def keeper(store: Store, credential_box: CredentialBox, provider_env: dict[str, str]) -> TokenKeeper:
    return TokenKeeper(store, credential_box, env=provider_env)
