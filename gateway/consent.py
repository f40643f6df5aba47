"""The OAuth2 consent flow: authorization code with PKCE (RFC 6749 §4.1, RFC 7636 S256), ending in an account.

    operator  --createOAuth2ConsentLink(provider, IMAP server, login)-->  a start link (single use, 1 hour)
    browser   GET /oauth2/{provider}/start?link=L
              -> L taken (deleted) -> a new `state` and PKCE verifier stored server-side (10 minutes)
              -> 302 to the provider's consent page with state, code_challenge (S256), login_hint
    provider  -> 302 GET /oauth2/{provider}/callback?code=C&state=S   (or ?error=access_denied&state=S)
              -> S taken (single use: a reused or forged state finds nothing) -> C exchanged with the verifier
              -> the IMAP login checked with the new access token (and SMTP, when configured)
              -> the account created, or the one with the same login re-authorized (leaves needs_consent)
              -> 303 to INBOXQL_OAUTH2_DONE_URL (or /oauth2/done) with ?account=<global id>

Why a start link rather than an open start URL: only an operator decides which mailbox may be connected and on
which server; anyone could otherwise make the gateway run flows (and IMAP logins) for addresses of their choice.
The link carries no credential, it is random, used once, and expires.

The refresh token never reaches the browser: it goes from the token endpoint straight into the sealed column.
Every bad callback (state missing, unknown, reused or expired; an error from the provider; a code the token
endpoint refuses, e.g. one issued to another client; a login the mail server refuses) gets an HTML error page
with status 400 and creates nothing. No token, code or state is logged.
"""

from __future__ import annotations

import html
import logging
import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

import oauth
from gateway.config import GatewayConfig
from gateway.ids import to_global
from gateway.logins import ImapLogin, LoginProblem, check_imap, check_smtp
from gateway.services import Services
from schema import accounts, consent

log = logging.getLogger(__name__)

LINK_LIFETIME = timedelta(hours=1)
# The user has this long on the provider's consent page.
STATE_LIFETIME = timedelta(minutes=10)
# Browsers and proxies keep none of these pages; the callback's URL (a code) is sent to no other site.
_HEADERS = {"cache-control": "no-store", "referrer-policy": "no-referrer"}


@dataclass(frozen=True, slots=True)
class ConsentLink:
    """What an operator's start link connects: the provider, the IMAP server and login, and optionally SMTP."""

    provider: str
    login: str
    address: str
    imap_host: str
    imap_port: int
    imap_security: str
    smtp_host: str | None = None
    smtp_port: int | None = None
    smtp_security: str | None = None
    smtp_username: str | None = None

    @property
    def smtp(self) -> accounts.SmtpSettings | None:
        if self.smtp_host is None or self.smtp_port is None:
            return None
        return accounts.SmtpSettings(
            self.smtp_host, self.smtp_port, self.smtp_security or "starttls", self.smtp_username
        )


def provider(config: GatewayConfig, name: str) -> oauth.Provider:
    """A provider the operator configured for this gateway (raises oauth.ProviderNotConfigured)."""
    found = oauth.provider(name, dict(config.oauth2_env))
    if found.authorize_url is None:
        raise oauth.ProviderNotConfigured(f"provider {name!r} has no authorize URL")
    return found


async def mint(services: Services, link: ConsentLink, base_url: str) -> tuple[str, datetime]:
    """A start link for `link` (the provider must be configured); returns its URL and when it expires."""
    provider(services.config, link.provider)
    secret = secrets.token_urlsafe(32)
    async with services.store.sessions() as session, session.begin():
        await consent.prune(session)  # links and states nobody came back for (an index range, usually empty)
        await consent.put(session, consent.LINK, secret, asdict(link), LINK_LIFETIME)
    base = (services.config.oauth2_public_url or base_url).rstrip("/")
    expires = datetime.now(UTC) + LINK_LIFETIME
    return f"{base}/oauth2/{link.provider}/start?{urlencode({'link': secret})}", expires


def _page(title: str, message: str, status: int) -> HTMLResponse:
    body = (
        f"<!doctype html><html lang=en><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<h1 id=title>{html.escape(title)}</h1><p id=message>{html.escape(message)}</p></html>"
    )
    return HTMLResponse(body, status_code=status, headers=_HEADERS)


def _refused(message: str) -> HTMLResponse:
    return _page("The mailbox was not connected", message, 400)


class ConsentFlow:
    """The routes of the flow: `start`, `callback`, `done`."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.config = services.config

    def _redirect_uri(self, request: Request, name: str) -> str:
        base = (self.config.oauth2_public_url or str(request.base_url)).rstrip("/")
        return f"{base}/oauth2/{name}/callback"

    async def start(self, request: Request) -> Response:
        name = request.path_params["provider"]
        secret = request.query_params.get("link", "")
        if not secret:
            return _refused("This address needs a start link from the service that sent you here.")
        async with self.services.store.sessions() as session, session.begin():
            data = await consent.take(session, consent.LINK, secret)
        if data is None:
            return _refused("This link was used already or has expired: ask for a new one.")
        link = ConsentLink(**data)
        if link.provider != name:
            return _refused("This link belongs to another provider.")
        try:
            found = provider(self.config, name)
        except oauth.ProviderNotConfigured:
            return _refused(f"The provider {name!r} is not configured here.")
        state, verifier = secrets.token_urlsafe(32), oauth.new_verifier()
        redirect_uri = self._redirect_uri(request, name)
        flow: dict[str, Any] = {"link": data, "verifier": verifier, "redirect_uri": redirect_uri}
        async with self.services.store.sessions() as session, session.begin():
            await consent.put(session, consent.STATE, state, flow, STATE_LIFETIME)
        url = oauth.authorization_url(found, redirect_uri, state, verifier, login_hint=link.login)
        return RedirectResponse(url, status_code=302, headers=_HEADERS)

    async def callback(self, request: Request) -> Response:
        name = request.path_params["provider"]
        params = request.query_params
        state = params.get("state", "")
        if not state:
            return _refused("The provider's answer carried no state: start again from your link.")
        async with self.services.store.sessions() as session, session.begin():
            flow = await consent.take(session, consent.STATE, state)
        if flow is None:
            return _refused("This answer was used already, has expired, or was not asked for here.")
        link = ConsentLink(**flow["link"])
        if link.provider != name:
            return _refused("This answer came back to another provider's address.")
        if "error" in params:
            return _refused(f"The provider did not grant access ({params['error']}).")
        code = params.get("code", "")
        if not code:
            return _refused("The provider's answer carried no authorization code.")
        try:
            granted = await oauth.exchange_code(
                provider(self.config, name), code, flow["redirect_uri"], flow["verifier"]
            )
        except oauth.GrantRefused as exc:
            return _refused(f"The provider refused the authorization code ({exc.error}).")
        except oauth.OAuth2Error as exc:
            return _page("The provider could not be reached", f"Try again later ({exc}).", 502)
        if granted.refresh_token is None:
            return _refused("The provider granted no refresh token (offline access): nothing was stored.")
        problem = await self._check(link, granted.access_token)
        if problem is not None:
            return _refused(f"The mail server did not accept the new authorization: {problem.message}")
        account_id = await self._store(link, granted)
        if account_id is None:
            return _refused("The account is being removed.")
        target = self.config.oauth2_done_url or f"{str(request.base_url).rstrip('/')}/oauth2/done"
        separator = "&" if "?" in target else "?"
        account = to_global("Account", account_id)
        return RedirectResponse(f"{target}{separator}{urlencode({'account': account})}", 303, headers=_HEADERS)

    async def _check(self, link: ConsentLink, token: str) -> LoginProblem | None:
        login = ImapLogin(link.imap_host, link.imap_port, link.imap_security, link.login, "", oauth2_token=token)
        problem = await check_imap(login)
        if problem is None and link.smtp is not None:
            problem = await check_smtp(link.smtp, link.login, "", None, oauth2_token=token)
        return problem

    async def _store(self, link: ConsentLink, granted: oauth.TokenSet) -> int | None:
        assert granted.refresh_token is not None
        expires = datetime.fromtimestamp(granted.expires_at, UTC).replace(tzinfo=None)
        grant = accounts.OAuth2Grant(link.provider, granted.refresh_token, granted.access_token, expires)
        box = self.services.box
        existing = None
        for store in self.services.stores.values():  # the login may be an account of any shard
            async with store.sessions() as session:
                existing = await accounts.find_login(session, link.imap_host, link.imap_port, link.login)
            if existing is not None:
                break
        if existing is not None:
            if not await accounts.reauthorize(self.services.store_of(existing), box, existing, grant):
                return None
            log.info("consent: account %s re-authorized through %s", existing, link.provider)
            return existing
        imap = accounts.ImapEndpoint(link.imap_host, link.imap_port, link.imap_security, link.login)
        shard = await accounts.place(self.services.engines)
        account_id = await accounts.create(
            self.services.stores[shard], box, link.address, imap, None, link.smtp, oauth2=grant, shard=shard
        )
        log.info("consent: account %s added through %s", account_id, link.provider)
        return account_id

    async def done(self, request: Request) -> Response:
        account = request.query_params.get("account", "")
        return _page(
            "Mailbox connected", f"Your mailbox is connected (account {account}). You may close this page.", 200
        )
