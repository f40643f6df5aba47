"""Who may look inside the running gateway (`/debug/profile`): the operator, meaning a request from this machine's
loopback without a token, or from anywhere with an operator-scoped token (`inboxql token create --operator`).

A request that carries a token is judged by its token, wherever it comes from: an account's token is refused even
on loopback (403), so a client on the same machine cannot read the process's insides with a mail token. Behind a
proxy on the same machine, uvicorn reports the forwarded client address (`FORWARDED_ALLOW_IPS` names the proxy):
a proxy that does not forward it would make every client look local, so such a proxy should refuse `/debug/`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.auth import TokenCache, authenticate, client_address, deferred_response, unauthenticated_response
from gateway.caps import AuthDeferred
from gateway.errors import FORBIDDEN
from ops.profile import Guard, error, is_loopback


def operator_guard(tokens: TokenCache) -> Guard:
    """The guard of the operator routes: None to let the request through, else the refusal to send."""

    async def guard(request: Request) -> Response | None:
        try:
            valid, viewer = await authenticate(tokens, request)
        except AuthDeferred as exc:
            return deferred_response(exc)
        if not valid:
            return unauthenticated_response("the API token is unknown or revoked")
        if viewer is None:
            if is_loopback(client_address(request)):
                return None
            return unauthenticated_response("an operator token is required (or ask from this machine)")
        if not viewer.operator:
            return error(403, FORBIDDEN, "this needs an operator token (inboxql token create --operator)")
        return None

    return guard
