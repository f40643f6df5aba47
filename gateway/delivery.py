"""Webhook delivery: a background task of the gateway process, started in the app's lifespan.

Why here and not in synccore: a delivery only reads the change log and writes the hook's own rows, which is
what the gateway already does (it depends on schema, never on synccore); the sync core's processes are sized
for IMAP connections and hold account leases, while any number of gateways may run, each delivering the hooks
it can lock (schema.webhooks.hold: one attempt per hook at a time across processes). No new process to deploy.

Per hook, events go out one per POST in seq order, and event N+1 is never sent before N succeeded (2xx).
A failure is retried after an exponential backoff with full jitter, kept in the database so it survives a
restart; a hook failing for longer than `webhook_disable_after` is disabled and says why.

SSRF: the host is resolved before every attempt (DNS may change after creation) and every address must be
allowed (see `refusal`); redirects are not followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import random
import socket
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.config import GatewayConfig
from schema import webhooks
from schema.changelog import Change
from schema.crypto import CredentialBox, CredentialError
from schema.db import session_factory
from schema.models import Webhook

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Inboxql-Signature"
EVENT_HEADER = "Inboxql-Event-Id"
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Cloud metadata services: refused whatever the configuration says.
METADATA = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})


class RefusedURL(ValueError):
    """A webhook URL that may not be called (scheme, or an address it resolves to)."""


def refusal(ip: IPAddress, *, allow_private: bool, allow_loopback: bool) -> str | None:
    """Why this address may not be called, or None when it may."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA:
        return "a cloud metadata address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_loopback:
        return None if allow_loopback else "a loopback address"
    if ip.is_unspecified or ip.is_multicast or ip.is_reserved:
        return "not a unicast address"
    if ip.is_private or not ip.is_global:
        return None if allow_private else "a private address"
    return None


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address the host resolves to (tests replace this to play DNS)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


async def check_url(url: str, config: GatewayConfig) -> list[IPAddress]:
    """The host's addresses; RefusedURL unless the URL is http(s) and every one of them is allowed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RefusedURL("a webhook URL must be http:// or https:// with a host")
    if parts.username or parts.password:
        raise RefusedURL("a webhook URL must not carry credentials")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise RefusedURL("a webhook URL must have a valid port") from exc
    try:
        literal: IPAddress | None = ipaddress.ip_address(parts.hostname)
    except ValueError:
        literal = None
    try:
        addresses = [literal] if literal is not None else await resolve(parts.hostname, port)
    except OSError as exc:
        raise RefusedURL(f"the host of the webhook URL does not resolve: {exc}") from exc
    if not addresses:
        raise RefusedURL("the host of the webhook URL does not resolve")
    for ip in addresses:
        why = refusal(ip, allow_private=config.webhook_allow_private, allow_loopback=config.webhook_allow_loopback)
        if why is not None:
            raise RefusedURL(f"the webhook URL resolves to {why} ({ip})")
    return addresses


def pinned(url: str, ip: IPAddress) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The URL aimed at the address we checked, with the Host header and TLS name of the original.

    Connecting to the checked address (not resolving the name a second time) closes the window in which DNS
    could answer differently (rebinding); TLS still verifies the certificate against the host name (SNI).
    """
    parts = urlsplit(url)
    assert parts.hostname is not None
    address = f"[{ip}]" if ip.version == 6 else str(ip)
    netloc = address + (f":{parts.port}" if parts.port else "")
    extensions: dict[str, Any] = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    return parts._replace(netloc=netloc).geturl(), {"host": parts.netloc}, extensions


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header value: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")> (Stripe-style)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, header: str, body: bytes, tolerance: float = 300, now: float | None = None) -> bool:
    """What a receiver does: recompute the HMAC, compare in constant time, refuse stale timestamps (replays)."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))


def backoff(failures: int, base: float, cap: float) -> float:
    """Full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter"): uniform in [0, min(cap, base*2^n)]."""
    return random.uniform(0, min(cap, base * 2 ** min(failures, 32)))


def payload(hook: Webhook, change: Change) -> bytes:
    event = {
        "id": f"{hook.account_id}:{change.seq}",
        "seq": change.seq,
        "accountId": hook.account_id,
        "type": change.object_type.value,
        "objectId": change.object_id,
        "op": change.op.value,
        "data": change.data,
        "createdAt": change.created_at.isoformat() + "Z",
    }
    return json.dumps({"webhookId": hook.id, "event": event}, separators=(",", ":"), default=str).encode()


class Deliverer:
    """Delivers every active hook's events: `run` until `stopping` is set."""

    def __init__(self, engine: AsyncEngine, box: CredentialBox, config: GatewayConfig) -> None:
        self.sessions = session_factory(engine)
        self.box = box
        self.config = config
        self.busy: dict[int, asyncio.Task[None]] = {}
        self.stopping = asyncio.Event()
        self.http = httpx.AsyncClient(timeout=config.webhook_timeout_seconds, follow_redirects=False)

    async def run(self) -> None:
        """Deliver until `stopping` is set, then let the attempts in flight finish (a cancel rolls one back)."""
        try:
            while not self.stopping.is_set():
                try:
                    await self.tick()
                except Exception:
                    log.exception("webhook delivery round failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), self.config.webhook_poll_seconds)
            await asyncio.gather(*list(self.busy.values()), return_exceptions=True)
        finally:
            for task in list(self.busy.values()):
                task.cancel()
            await asyncio.gather(*list(self.busy.values()), return_exceptions=True)
            await self.http.aclose()

    async def tick(self) -> None:
        async with self.sessions() as session:
            due = await webhooks.due(session, webhooks.now())
        for hook_id in due:
            if len(self.busy) >= self.config.webhook_concurrency:
                break  # each attempt holds a pooled connection: the rest wait for the next round
            if hook_id not in self.busy:
                self.busy[hook_id] = asyncio.create_task(self.drain(hook_id), name=f"webhook-{hook_id}")

    async def drain(self, hook_id: int) -> None:
        """Send this hook's events until it is caught up, fails, or another process holds it."""
        try:
            while not self.stopping.is_set() and await self.attempt(hook_id):
                pass
        except Exception:
            log.exception("webhook %s: delivery failed unexpectedly", hook_id)
        finally:
            self.busy.pop(hook_id, None)

    async def attempt(self, hook_id: int) -> bool:
        """One attempt in one transaction; True when it succeeded and more may follow."""
        async with self.sessions() as session, session.begin():
            hook = await webhooks.hold(session, hook_id)
            if hook is None:
                return False
            now = webhooks.now()
            if hook.next_attempt_at is not None and hook.next_attempt_at > now:
                return False
            change = await webhooks.next_event(session, hook)
            if change is None:
                return False
            status, error, elapsed = await self.post(hook, change)
            ok = error is None and status is not None and 200 <= status < 300
            if not ok and error is None:
                error = f"HTTP {status}"
            webhooks.record(
                session,
                hook,
                change,
                status_code=status,
                error=error,
                duration_ms=elapsed,
                ok=ok,
                now=webhooks.now(),
                retry_in=timedelta(
                    seconds=backoff(
                        hook.failures, self.config.webhook_backoff_base_seconds, self.config.webhook_backoff_cap_seconds
                    )
                ),
                disable_after=timedelta(seconds=self.config.webhook_disable_after_seconds),
            )
            return ok

    async def post(self, hook: Webhook, change: Change) -> tuple[int | None, str | None, int]:
        started = time.monotonic()

        def elapsed() -> int:
            return int((time.monotonic() - started) * 1000)

        try:
            addresses = await check_url(hook.url, self.config)
        except RefusedURL as exc:
            return None, f"refused: {exc}", elapsed()
        try:
            secret = self.box.open(hook.secret)
        except CredentialError as exc:
            return None, str(exc), elapsed()
        target, host, extensions = pinned(hook.url, addresses[0])
        body = payload(hook, change)
        headers = {
            **host,
            "content-type": "application/json",
            "user-agent": "inboxql-webhooks/1",
            SIGNATURE_HEADER: sign(secret, int(time.time()), body),
            EVENT_HEADER: f"{hook.account_id}:{change.seq}",
        }
        try:
            # Streamed and never read: only the status matters, and a receiver's body could be any size.
            request = self.http.stream("POST", target, content=body, headers=headers, extensions=extensions)
            async with request as response:
                return response.status_code, None, elapsed()
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:1000], elapsed()


@contextlib.asynccontextmanager
async def running(deliverer: Deliverer | None) -> AsyncIterator[None]:
    """Run the deliverer for the life of the block (None: nothing to run).

    On the way out the attempts in flight may finish (up to the HTTP timeout), so a graceful restart sends
    nothing twice; only a cancelled attempt is rolled back and sent again (the receiver dedups by event id).
    """
    if deliverer is None:
        yield
        return
    task = asyncio.create_task(deliverer.run(), name="webhook-delivery")
    try:
        yield
    finally:
        deliverer.stopping.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), deliverer.config.webhook_timeout_seconds + 1)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
