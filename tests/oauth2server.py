"""A small OAuth2 authorization server for tests, built on authlib's server components, served by uvicorn.

    GET  /authorize   the login-and-consent page (user name, password, Allow / Deny)
    POST /authorize   -> 302 to the client's redirect URI with ?code&state (authorization code, PKCE S256 required)
                         or ?error=access_denied&state
    POST /token       authorization_code (with code_verifier) and refresh_token grants; refresh tokens rotate
    POST /revoke      RFC 7009
    POST /introspect  RFC 7662, for Dovecot's oauth2 passdb (client `dovecot`, HTTP Basic): active, username, exp

Everything is in memory. `access_lifetime` (seconds) can be set short to test expiry; `revoke_user` revokes a
user's grants the way a user removing an app's access does; `requests` counts what each endpoint was asked.
"""

from __future__ import annotations

import html
import secrets
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import uvicorn
from authlib.oauth2.rfc6749 import (
    AuthorizationServer,
    ClientMixin,
    JsonRequest,
    OAuth2Request,
    TokenMixin,
)
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant, RefreshTokenGrant
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from inboxql.devmail import free_port

SCOPE = "mail"
DOVECOT_CLIENT = ("dovecot", "dovecot-secret")


@dataclass
class Client(ClientMixin):  # type: ignore[misc]
    client_id: str
    client_secret: str
    redirect_uris: tuple[str, ...] = ()

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return self.redirect_uris[0] if self.redirect_uris else None

    def get_allowed_scope(self, scope: str | None) -> str:
        return SCOPE if not scope else " ".join(s for s in scope.split() if s == SCOPE)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in ("authorization_code", "refresh_token")


@dataclass
class Code:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: str
    code_challenge: str | None
    code_challenge_method: str | None
    expires_at: float

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_code_challenge(self) -> str | None:
        return self.code_challenge

    def get_code_challenge_method(self) -> str | None:
        return self.code_challenge_method

    def get_nonce(self) -> None:
        return None

    def get_auth_time(self) -> None:
        return None


@dataclass
class Token(TokenMixin):  # type: ignore[misc]
    client_id: str
    user: str
    scope: str
    access_token: str
    refresh_token: str | None
    issued_at: float
    expires_in: int
    revoked: bool = False  # the access token
    refresh_revoked: bool = False

    def check_client(self, client: Client) -> bool:
        return client.client_id == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_in

    def is_expired(self) -> bool:
        return time.time() >= self.issued_at + self.expires_in

    def is_revoked(self) -> bool:
        return self.revoked

    def get_user(self) -> str:
        return self.user

    def get_client(self) -> Client:
        raise NotImplementedError


@dataclass
class State:
    clients: dict[str, Client] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=dict)  # name -> password
    codes: dict[str, Code] = field(default_factory=dict)
    tokens: list[Token] = field(default_factory=list)
    spent: set[str] = field(default_factory=set)  # codes used or expired (the log guard looks for them too)
    requests: Counter[str] = field(default_factory=Counter)  # "token:refresh_token", "introspect:active", ...
    access_lifetime: int = 3600
    lock: threading.Lock = field(default_factory=threading.Lock)

    def by_access(self, value: str) -> Token | None:
        return next((t for t in self.tokens if t.access_token == value), None)

    def by_refresh(self, value: str) -> Token | None:
        return next((t for t in self.tokens if t.refresh_token == value), None)


class _Payload(BasicOAuth2Payload):  # type: ignore[misc]
    pass


class _Request(OAuth2Request):  # type: ignore[misc]
    """authlib's request over values Starlette has already read (authlib's server is synchronous)."""

    def __init__(
        self, method: str, uri: str, headers: Mapping[str, str], args: dict[str, str], form: dict[str, str]
    ) -> None:
        super().__init__(method, uri, headers=headers)
        self._args = args
        self._form = form
        self.payload = _Payload({**args, **form})

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


class _Server(AuthorizationServer):  # type: ignore[misc]
    def __init__(self, state: State) -> None:
        super().__init__(scopes_supported=[SCOPE])
        self.state = state
        self.register_token_generator(
            "default",
            BearerTokenGenerator(
                lambda *a, **k: "at-" + secrets.token_urlsafe(24),
                lambda *a, **k: "rt-" + secrets.token_urlsafe(24),
                lambda client, grant_type: state.access_lifetime,
            ),
        )

    def query_client(self, client_id: str) -> Client | None:
        return self.state.clients.get(client_id)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        self.state.tokens.append(
            Token(
                request.client.client_id,
                request.user,
                token.get("scope", SCOPE),
                token["access_token"],
                token.get("refresh_token"),
                time.time(),
                int(token["expires_in"]),
            )
        )

    def create_oauth2_request(self, request: OAuth2Request) -> OAuth2Request:
        return request

    def create_json_request(self, request: Any) -> JsonRequest:
        raise NotImplementedError

    def handle_response(self, status: int, body: Any, headers: list[tuple[str, str]]) -> Response:
        if isinstance(body, dict):
            return JSONResponse(body, status_code=status, headers=dict(headers))
        return Response(body or "", status_code=status, headers=dict(headers))

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass


class _CodeGrant(AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        state: State = self.server.state
        state.codes[code] = Code(
            code,
            request.client.client_id,
            request.payload.redirect_uri,
            request.scope or SCOPE,
            request.user,
            request.payload.data.get("code_challenge"),
            request.payload.data.get("code_challenge_method"),
            time.time() + 300,
        )

    def query_authorization_code(self, code: str, client: Client) -> Code | None:
        found = self.server.state.codes.get(code)
        if found is None or found.client_id != client.client_id or found.expires_at < time.time():
            return None
        return found  # type: ignore[no-any-return]

    def delete_authorization_code(self, authorization_code: Code) -> None:
        self.server.state.codes.pop(authorization_code.code, None)
        self.server.state.spent.add(authorization_code.code)

    def authenticate_user(self, authorization_code: Code) -> str:
        return authorization_code.user


class _RefreshGrant(RefreshTokenGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
    INCLUDE_NEW_REFRESH_TOKEN = True  # rotation, as Microsoft does

    def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
        found = self.server.state.by_refresh(refresh_token)
        return None if found is None or found.refresh_revoked else found

    def authenticate_user(self, refresh_token: Token) -> str:
        return refresh_token.user

    def revoke_old_credential(self, refresh_token: Token) -> None:
        refresh_token.refresh_revoked = True


class _Revocation(RevocationEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

    def query_token(self, token_string: str, token_type_hint: str | None) -> Token | None:
        state: State = self.server.state
        return state.by_access(token_string) or state.by_refresh(token_string)

    def revoke_token(self, token: Token, request: OAuth2Request) -> None:
        token.revoked = token.refresh_revoked = True


class _Introspection(IntrospectionEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

    def query_token(self, token_string: str, token_type_hint: str | None) -> Token | None:
        return self.server.state.by_access(token_string)  # type: ignore[no-any-return]

    def introspect_token(self, token: Token) -> dict[str, Any]:
        return {
            "active": True,
            "client_id": token.client_id,
            "username": token.user,
            "scope": token.scope,
            "token_type": "Bearer",
            "exp": int(token.issued_at + token.expires_in),
            "iat": int(token.issued_at),
        }

    def check_permission(self, token: Token, client: Client, request: OAuth2Request) -> bool:
        return client.client_id == DOVECOT_CLIENT[0]  # the resource server may look at any token


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(f"<!doctype html><title>{html.escape(title)}</title><h1>{html.escape(title)}</h1>{body}")


class AuthServer:
    """The server on a loopback port, in a thread: `start()`, `stop()`, `url`; clients and users added at will."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.state = State()
        self.server = _Server(self.state)
        self.server.register_grant(_CodeGrant, [CodeChallenge(required=True)])
        self.server.register_grant(_RefreshGrant)
        self.server.register_endpoint(_Revocation)
        self.server.register_endpoint(_Introspection)
        self.add_client(*DOVECOT_CLIENT)
        self.app = Starlette(
            routes=[
                Route("/authorize", self._authorize, methods=["GET", "POST"]),
                Route("/token", self._token, methods=["POST"]),
                Route("/revoke", self._revoke, methods=["POST"]),
                Route("/introspect", self._introspect, methods=["POST"]),
            ]
        )
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self._uvicorn = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._uvicorn.run, name="oauth2-server", daemon=True)

    # -- set-up ------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def introspection_url(self) -> str:
        """With the resource server's credentials in it, as Dovecot's oauth2 passdb takes them."""
        return f"http://{DOVECOT_CLIENT[0]}:{DOVECOT_CLIENT[1]}@127.0.0.1:{self.port}/introspect"

    def add_client(self, client_id: str, secret: str, redirect_uris: tuple[str, ...] = ()) -> None:
        self.state.clients[client_id] = Client(client_id, secret, redirect_uris)

    def add_user(self, name: str, password: str) -> None:
        self.state.users[name] = password

    def env(self, name: str, client_id: str) -> dict[str, str]:
        """inboxql's provider settings for a client of this server."""
        prefix = f"INBOXQL_OAUTH2_{name.upper()}_"
        return {
            prefix + "CLIENT_ID": client_id,
            prefix + "CLIENT_SECRET": self.state.clients[client_id].client_secret,
            prefix + "TOKEN_URL": f"{self.url}/token",
            prefix + "AUTHORIZE_URL": f"{self.url}/authorize",
            prefix + "SCOPES": SCOPE,
        }

    def grant(self, client_id: str, user: str) -> Token:
        """A grant as if `user` had consented to `client_id` (for tests that skip the browser)."""
        token = Token(
            client_id,
            user,
            SCOPE,
            "at-" + secrets.token_urlsafe(24),
            "rt-" + secrets.token_urlsafe(24),
            time.time(),
            self.state.access_lifetime,
        )
        with self.state.lock:
            self.state.tokens.append(token)
        return token

    @property
    def spent_codes(self) -> set[str]:
        return self.state.spent

    def revoke_access(self, access_token: str) -> None:
        """Only this access token stops working (its refresh token still does)."""
        with self.state.lock:
            found = self.state.by_access(access_token)
            if found is not None:
                found.revoked = True

    def revoke_user(self, user: str) -> None:
        """The user withdrew consent: every grant of theirs is revoked, access and refresh tokens alike."""
        with self.state.lock:
            for token in self.state.tokens:
                if token.user == user:
                    token.revoked = token.refresh_revoked = True

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the authorization server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self._uvicorn.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> AuthServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- endpoints ---------------------------------------------------------------------------------
    async def _request(self, request: Request) -> _Request:
        # Form bodies parsed here: Starlette's request.form() needs python-multipart, which is not installed.
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        # Starlette's headers, not a dict: authlib looks up "Authorization" and the wire says "authorization".
        return _Request(request.method, str(request.url), request.headers, dict(request.query_params), form)

    async def _authorize(self, request: Request) -> Response:
        oauth_request = await self._request(request)
        self.state.requests[f"authorize:{request.method}"] += 1
        with self.state.lock:
            try:
                grant = self.server.get_consent_grant(oauth_request)
            except Exception as exc:  # authlib's OAuth2Error: no valid client or redirect URI to send it to
                return _page("Authorization failed", f"<p id=error>{html.escape(str(exc))}</p>")
            if request.method == "GET":
                return self._consent_page(oauth_request, grant.client.client_id)
            user = oauth_request.form.get("username", "")
            approved = oauth_request.form.get("decision") == "allow"
            if approved and self.state.users.get(user) != oauth_request.form.get("password"):
                return self._consent_page(oauth_request, grant.client.client_id, "Wrong user name or password")
            response: Response = self.server.create_authorization_response(
                oauth_request, grant_user=user if approved else None, grant=grant
            )
            return response

    def _consent_page(self, request: _Request, client_id: str, problem: str = "") -> HTMLResponse:
        action = "/authorize?" + urlencode(request.args)
        warning = f"<p id=problem>{html.escape(problem)}</p>" if problem else ""
        return _page(
            "Sign in and consent",
            f"{warning}<p><b>{html.escape(client_id)}</b> asks to read and send your mail.</p>"
            f'<form method=post action="{html.escape(action)}">'
            "<label>User <input name=username id=username></label>"
            "<label>Password <input name=password id=password type=password></label>"
            "<button name=decision value=allow id=allow>Allow</button>"
            "<button name=decision value=deny id=deny>Deny</button></form>",
        )

    async def _token(self, request: Request) -> Response:
        oauth_request = await self._request(request)
        self.state.requests[f"token:{oauth_request.form.get('grant_type')}"] += 1
        with self.state.lock:
            response: Response = self.server.create_token_response(oauth_request)
        return response

    async def _revoke(self, request: Request) -> Response:
        oauth_request = await self._request(request)
        self.state.requests["revoke"] += 1
        with self.state.lock:
            response: Response = self.server.create_endpoint_response("revocation", oauth_request)
        return response

    async def _introspect(self, request: Request) -> Response:
        oauth_request = await self._request(request)
        with self.state.lock:
            response: Response = self.server.create_endpoint_response("introspection", oauth_request)
        active = b'"active":true' in bytes(response.body).replace(b" ", b"")
        self.state.requests[f"introspect:{'active' if active else 'inactive'}"] += 1
        return response
