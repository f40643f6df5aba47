"""XOAUTH2 and OAUTHBEARER against a real Dovecot whose oauth2 passdb introspects tokens at the test authorization
server; the login check the gateway and the command line use; a refused token refreshed once."""

from __future__ import annotations

import pytest

from gateway.logins import ImapLogin, LoginProblemCode, check_imap
from inboxql.devmail import DovecotServer
from synccore.connection import Endpoint, open_client
from synccore.imap import AuthenticationFailed, ImapClient, sasl
from tests.oauth2.conftest import CLIENT
from tests.oauth2server import AuthServer


async def _client(dovecot: DovecotServer) -> ImapClient:
    client = ImapClient(timeout=15)
    await client.connect(dovecot.host, dovecot.port, security="none")
    return client


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
async def test_a_live_token_logs_in(
    oauth_dovecot: DovecotServer, auth_server: AuthServer, oauth_user: tuple[str, str], mechanism: sasl.Mechanism
) -> None:
    user, _ = oauth_user
    token = auth_server.grant(CLIENT[0], user)
    client = await _client(oauth_dovecot)
    assert {"AUTH=XOAUTH2", "AUTH=OAUTHBEARER"} <= client.capabilities
    used = await client.authenticate_oauth2(user, token.access_token, mechanism=mechanism, host="127.0.0.1")
    assert used == mechanism
    assert "IDLE" in client.capabilities  # the capabilities of the authenticated state
    await client.select("INBOX")
    await client.logout()
    assert f"user=<{user}>, method={mechanism}" in oauth_dovecot.log_file.read_text()


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
async def test_a_revoked_token_is_refused_after_the_challenge_is_answered(
    oauth_dovecot: DovecotServer, auth_server: AuthServer, oauth_user: tuple[str, str], mechanism: sasl.Mechanism
) -> None:
    """The server's 401 challenge is answered (an empty line, or %x01), so the exchange ends with a tagged NO
    [AUTHENTICATIONFAILED] rather than a hang."""
    user, _ = oauth_user
    token = auth_server.grant(CLIENT[0], user)
    auth_server.revoke_access(token.access_token)
    client = await _client(oauth_dovecot)
    try:
        with pytest.raises(AuthenticationFailed) as refused:
            await client.authenticate_oauth2(user, token.access_token, mechanism=mechanism)
        assert refused.value.code is not None
        assert refused.value.code.name == "AUTHENTICATIONFAILED"
    finally:
        await client.close()


async def test_the_mechanism_follows_what_the_server_advertises(
    oauth_dovecot: DovecotServer, auth_server: AuthServer, oauth_user: tuple[str, str]
) -> None:
    user, _ = oauth_user
    token = auth_server.grant(CLIENT[0], user)
    endpoint = Endpoint(oauth_dovecot.host, oauth_dovecot.port, "none", user, "", None, token.access_token)
    client = await open_client(endpoint)
    await client.logout()
    assert f"user=<{user}>, method=OAUTHBEARER" in oauth_dovecot.log_file.read_text()


async def test_passwords_still_work_beside_tokens(oauth_dovecot: DovecotServer, oauth_user: tuple[str, str]) -> None:
    client = await _client(oauth_dovecot)
    await client.login(*oauth_user)
    await client.logout()


async def test_the_login_check_takes_a_token(
    oauth_dovecot: DovecotServer, auth_server: AuthServer, oauth_user: tuple[str, str]
) -> None:
    user, _ = oauth_user
    token = auth_server.grant(CLIENT[0], user)
    login = ImapLogin(oauth_dovecot.host, oauth_dovecot.port, "none", user, "", oauth2_token=token.access_token)
    assert await check_imap(login) is None
    other = auth_server.grant(CLIENT[0], "somebody-else")
    wrong = ImapLogin(oauth_dovecot.host, oauth_dovecot.port, "none", user, "", oauth2_token=other.access_token)
    problem = await check_imap(wrong)
    assert problem is not None
    assert problem.code is LoginProblemCode.LOGIN_REFUSED


async def test_a_server_without_oauth_mechanisms_is_a_typed_problem(
    dovecot: DovecotServer, auth_server: AuthServer
) -> None:
    token = auth_server.grant(CLIENT[0], "nobody")
    login = ImapLogin(dovecot.host, dovecot.port, "none", "nobody", "", oauth2_token=token.access_token)
    problem = await check_imap(login)
    assert problem is not None
    assert "neither OAUTHBEARER nor XOAUTH2" in problem.message
