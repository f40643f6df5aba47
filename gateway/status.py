"""The operator status page: `GET /status` (the page, gateway.statuspage) and `GET /status.json` (what it polls,
also for scripts), to an operator token only.

`/status.json` answers 401 without a valid token (`Authorization: Bearer ...`) and 403 to any token without the
operator scope, as the operator API does (gateway.graphql.mutations.operator): it names every account and its
errors, which an account's own token must not see. It reads MySQL through schema.status (one snapshot, a few
queries), never the sync core: the page shows what the sync process recorded (tests/test_layers.py).

The page itself carries no data and needs no token to load (its token comes in the link's fragment, which the
browser does not send): `/status#token=iqt_...`. `/status.json?account=1&account=2` reads only those accounts (a
script's question, and a smaller answer: 1,000 accounts of 6 folders are about 1.4 MB and 120 ms to build).

```
{"takenAt": "2026-12-06T11:00:00.123456",
 "accounts": [{"id": "QWNjb3VudDox", "accountId": 1, "address": "me@example.com", "syncState": "syncing",
   "syncError": null, "syncErrorAt": null, "leaseHolder": "host:4242:ab12cd34", "leaseLive": true,
   "changeLogHead": 1042, "mirrored": 250, "serverCount": 1000, "progress": "250 of 1,000", "failingWebhooks": 0,
   "folders": [{"id": 3, "name": "INBOX", "role": "inbox", "syncState": "initial", "mirrored": 250,
     "serverCount": 1000, "progress": "250 of 1,000", "syncError": null, "syncErrorAt": null}, ...],
   "webhooks": [{"id": 7, "endpoint": "https://example.com/hook", "state": "active", "failing": false, ...}]}]}
```
Times are UTC (ISO 8601, no offset, as stored). Over several shards the accounts of every shard are listed by id;
while a shard's server cannot be reached its accounts are missing and `"unavailableShards": [1]` names it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.auth import bearer, client_address, deferred_response
from gateway.caps import AuthDeferred
from gateway.errors import BAD_USER_INPUT, FORBIDDEN, UNAUTHENTICATED
from gateway.ids import to_global
from gateway.services import Services
from gateway.statuspage import status_page
from schema import status
from schema.webhooks import Health

NOT_OPERATOR = "the status page needs an operator token (inboxql token create --operator)"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _error(code: int, kind: str, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="inboxql"'} if code == 401 else None
    return JSONResponse({"errors": [{"message": message, "extensions": {"code": kind}}]}, code, headers=headers)


def _folder(f: status.FolderProgress) -> dict[str, Any]:
    return {
        "id": f.id,
        "name": f.name,
        "role": f.role,
        "syncState": f.sync_state,
        "mirrored": f.mirrored,
        "serverCount": f.server_count,
        "progress": f.progress,
        "syncError": f.sync_error,
        "syncErrorAt": _iso(f.sync_error_at),
        "syncedAt": _iso(f.synced_at),
    }


def _hook(h: Health) -> dict[str, Any]:
    return {
        "id": h.id,
        "endpoint": h.endpoint,
        "state": h.state,
        "failing": h.failing,
        "failures": h.failures,
        "failingSince": _iso(h.failing_since),
        "disabledReason": h.disabled_reason,
        "behind": h.behind,
        "lastAttemptAt": _iso(h.last_attempt_at),
        "lastStatus": h.last_status,
        "lastError": h.last_error,
    }


def as_json(snap: status.Snapshot) -> dict[str, Any]:
    return {
        "takenAt": _iso(snap.taken_at),
        "accounts": [
            {
                "id": to_global("Account", a.id),
                "accountId": a.id,
                "address": a.address,
                "syncState": a.sync_state,
                "syncError": a.sync_error,
                "syncErrorAt": _iso(a.sync_error_at),
                "leaseHolder": a.lease_holder,
                "leaseLive": a.lease_live(snap.taken_at),
                "changeLogHead": a.change_log_head,
                "mirrored": a.mirrored,
                "serverCount": a.server_count,
                "progress": a.progress,
                "failingWebhooks": a.failing_webhooks,
                "folders": [_folder(f) for f in a.folders],
                "webhooks": [_hook(h) for h in a.webhooks],
            }
            for a in snap.accounts
        ],
    }


class StatusRoutes:
    def __init__(self, services: Services) -> None:
        self.engines = services.engines
        self.tokens = services.tokens

    async def page(self, request: Request) -> Response:
        return status_page()

    async def data(self, request: Request) -> Response:
        token = bearer(request.headers)
        if not token:
            return _error(401, UNAUTHENTICATED, "an operator token is required (Authorization: Bearer ...)")
        try:
            viewer = await self.tokens.viewer(token, client=client_address(request))
        except AuthDeferred as exc:
            return deferred_response(exc)
        if viewer is None:
            return _error(401, UNAUTHENTICATED, "the token is unknown or revoked")
        if not viewer.operator:
            return _error(403, FORBIDDEN, NOT_OPERATOR)
        try:
            only = [int(v) for v in request.query_params.getlist("account")]
        except ValueError:
            return _error(400, BAD_USER_INPUT, "account must be an account's number (?account=1&account=2)")
        found = await status.snapshot_shards(self.engines, only or None)
        body = as_json(found.snapshot)
        if found.unavailable:  # several shards, one down: its accounts are missing, and the answer says so
            body["unavailableShards"] = list(found.unavailable)
        return JSONResponse(body, headers={"cache-control": "no-store"})
