"""Webhook delivery: a background task of the gateway process, started in the app's lifespan.

Why here and not in synccore: a delivery only reads the change log and writes the hook's own rows, which is
what the gateway already does (it depends on schema, never on synccore); the sync core's processes are sized
for IMAP connections and hold account leases, while any number of gateways may run, each delivering the hooks
it can lock (schema.webhooks.hold: one attempt per hook at a time across processes). No new process to deploy.

When to try: the account's doorbell (the process's one subscription, gateway.fanout) wakes the deliverer for
that account's due hooks within milliseconds; a slower poll of the database covers lost doorbells, and the
usual one while the doorbell is down (see `Deliverer`).

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
import math
import random
import socket
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.config import GatewayConfig
from schema import webhooks
from schema.changelog import Change
from schema.crypto import CredentialBox, CredentialError, Purpose
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


class Doorbells(Protocol):
    """The process's doorbell subscription as the deliverer uses it (gateway.fanout.Fanout offers it).

    `on_ring(callback)` calls `callback(account_id)` for every doorbell the subscription hears, whoever else
    listens, and `callback(None)` when the subscription is made or lost (rings may have gone unheard: look at
    everything); it returns a function that takes the callback off. Callbacks run in the event loop and must
    neither block nor raise. `connected` tells whether rings can be heard right now.
    """

    @property
    def connected(self) -> bool: ...

    def on_ring(self, callback: Callable[[int | None], None]) -> Callable[[], None]: ...


class Deliverer:
    """Delivers every active hook's events: `run` until `stopping` is set.

    What to try when, in one loop (`run`); the database decides whether an attempt may go out (`attempt`):
    - a doorbell of an account with active hooks makes its due hooks ready at once;
    - a full round re-reads the active hooks and makes the due ones with changes to send ready, every
      `webhook_safety_seconds` while the doorbell is heard (a ring whose PUBLISH failed is lost), every
      `webhook_poll_seconds` while it is not (or when there is no doorbell), and at once when the subscription
      is made or lost;
    - a ring of an account with no hook known here re-reads the hooks, at most every `webhook_discover_seconds`
      (a hook created or re-enabled since the last read);
    - a hook in backoff becomes ready when its backoff ends, not before: doorbells do not shorten it;
    - ready hooks are drained, `webhook_concurrency` at a time; a hook rung while it drains drains once more
      (its last read may predate the commit that rang).
    What this process knows of the hooks (`hooks`, `waiting`) only chooses what to try: a stale entry costs one
    short transaction, and `attempt` checks the hook under its lock.
    """

    def __init__(
        self, engine: AsyncEngine, box: CredentialBox, config: GatewayConfig, doorbells: Doorbells | None = None
    ) -> None:
        self.sessions = session_factory(engine)
        self.box = box
        self.config = config
        self.doorbells = doorbells
        self.busy: dict[int, asyncio.Task[None]] = {}
        self.stopping = asyncio.Event()
        self.http = httpx.AsyncClient(timeout=config.webhook_timeout_seconds, follow_redirects=False)
        self.hooks: dict[int, set[int]] = {}  # account -> its active hooks, as last read
        self.waiting: dict[int, datetime] = {}  # hook -> when its backoff ends
        self.ready: set[int] = set()  # hooks to drain when a slot is free (if due then)
        self.again: set[int] = set()  # hooks rung while draining: drain once more
        self.rung: set[int] = set()  # accounts with hooks rung since the loop last looked
        self.unknown: set[int] = set()  # accounts rung with no hook known here
        self.full_at = 0.0  # time.monotonic() of the next full round
        self.read_at = -math.inf  # ... of the last read of the hooks
        self.wakeup = asyncio.Event()
        self.rounds = 0  # full rounds so far
        self.attempts = 0  # attempt transactions so far

    def ring(self, account_id: int | None) -> None:
        """The doorbell callback (`Doorbells.on_ring`): note the account and wake the loop; never blocks."""
        if account_id is None:
            self.full_at = 0.0
        elif account_id in self.hooks:
            self.rung.add(account_id)
        elif account_id not in self.unknown:
            self.unknown.add(account_id)
        else:
            return
        self.wakeup.set()

    def interval(self) -> float:
        heard = self.doorbells is not None and self.doorbells.connected
        return self.config.webhook_safety_seconds if heard else self.config.webhook_poll_seconds

    async def run(self) -> None:
        """Deliver until `stopping` is set, then let the attempts in flight finish (a cancel rolls one back)."""
        off = self.doorbells.on_ring(self.ring) if self.doorbells is not None else None
        try:
            while not self.stopping.is_set():
                self.wakeup.clear()  # before the round: a ring during its awaits wakes the next one at once
                try:
                    await self.round()
                except Exception:
                    log.exception("webhook delivery round failed")
                await self.sleep(self.until_next())
            await asyncio.gather(*list(self.busy.values()), return_exceptions=True)
        finally:
            if off is not None:
                off()
            for task in list(self.busy.values()):
                task.cancel()
            await asyncio.gather(*list(self.busy.values()), return_exceptions=True)
            await self.http.aclose()

    async def round(self) -> None:
        clock = time.monotonic()
        if clock >= self.full_at:
            self.full_at = clock + self.interval()
            self.rounds += 1
            self.rung.clear()
            self.unknown.clear()
            self.ready.update(await self.read_hooks())
        elif self.unknown and clock >= self.read_at + self.config.webhook_discover_seconds:
            unknown, self.unknown = self.unknown, set()
            await self.read_hooks()
            self.rung.update(unknown & self.hooks.keys())
        for account_id in self.rung:
            self.ready.update(self.hooks.get(account_id, ()))
        self.rung.clear()
        now = webhooks.now()
        for hook_id, until in list(self.waiting.items()):
            if until <= now:
                del self.waiting[hook_id]
                self.ready.add(hook_id)
        self.start(now)

    async def read_hooks(self) -> set[int]:
        """Re-read the active hooks; returns those behind their account's log (the others have nothing to send)."""
        self.read_at = time.monotonic()
        async with self.sessions() as session:
            rows = (await session.execute(webhooks.active())).all()
        self.hooks = {}
        self.waiting = {}
        behind: set[int] = set()
        for hook_id, account_id, next_attempt_at, late in rows:
            self.hooks.setdefault(account_id, set()).add(hook_id)
            if next_attempt_at is not None:
                self.waiting[hook_id] = next_attempt_at
            if late:
                behind.add(hook_id)
        return behind

    def start(self, now: datetime) -> None:
        """Drain the ready hooks that are due, lowest id first, while slots are free."""
        for hook_id in sorted(self.ready):
            if len(self.busy) >= self.config.webhook_concurrency:
                return  # each attempt holds a pooled connection: the rest start as drains end
            self.ready.discard(hook_id)
            if hook_id in self.busy:
                self.again.add(hook_id)
            elif self.due(hook_id, now):
                self.busy[hook_id] = asyncio.create_task(self.drain(hook_id), name=f"webhook-{hook_id}")

    def due(self, hook_id: int, now: datetime) -> bool:
        until = self.waiting.get(hook_id)
        return until is None or until <= now

    def until_next(self) -> float:
        """Seconds until the loop must look again without being woken: a full round, a re-read, a backoff's end."""
        clock = time.monotonic()
        deadline = self.full_at
        if self.unknown:
            deadline = min(deadline, self.read_at + self.config.webhook_discover_seconds)
        if self.waiting:
            deadline = min(deadline, clock + (min(self.waiting.values()) - webhooks.now()).total_seconds())
        return max(0.0, deadline - clock)

    async def sleep(self, seconds: float) -> None:
        """Until woken, stopped, or `seconds` passed."""
        waiters = {asyncio.ensure_future(self.wakeup.wait()), asyncio.ensure_future(self.stopping.wait())}
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def drain(self, hook_id: int) -> None:
        """Send this hook's events until it is caught up, fails, or another process holds it."""
        try:
            while True:
                self.again.discard(hook_id)
                while not self.stopping.is_set() and await self.attempt(hook_id):
                    pass
                if self.stopping.is_set() or hook_id not in self.again or not self.due(hook_id, webhooks.now()):
                    break
        except Exception:
            log.exception("webhook %s: delivery failed unexpectedly", hook_id)
        finally:
            self.busy.pop(hook_id, None)
            self.again.discard(hook_id)
            self.wakeup.set()  # a slot is free for the hooks still ready

    async def attempt(self, hook_id: int) -> bool:
        """One attempt in one transaction; True when it succeeded and more may follow."""
        self.attempts += 1
        async with self.sessions() as session, session.begin():
            hook = await webhooks.hold(session, hook_id)
            if hook is None:
                return False
            now = webhooks.now()
            if hook.next_attempt_at is not None and hook.next_attempt_at > now:
                self.waiting[hook_id] = hook.next_attempt_at  # another process failed it: wait as it does
                return False
            change = await webhooks.next_event(session, hook)
            if change is None:
                ok = False
            else:
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
                            hook.failures,
                            self.config.webhook_backoff_base_seconds,
                            self.config.webhook_backoff_cap_seconds,
                        )
                    ),
                    disable_after=timedelta(seconds=self.config.webhook_disable_after_seconds),
                )
            account_id, state, until = hook.account_id, hook.state, hook.next_attempt_at
        # Committed: remember what it decided (a failed commit leaves the entries to the next read).
        if state != webhooks.ACTIVE:
            self.forget(account_id, hook_id)
        elif until is None:
            self.waiting.pop(hook_id, None)
        else:
            self.waiting[hook_id] = until
        return ok

    def forget(self, account_id: int, hook_id: int) -> None:
        hooks = self.hooks.get(account_id)
        if hooks is not None:
            hooks.discard(hook_id)
            if not hooks:
                del self.hooks[account_id]
        self.waiting.pop(hook_id, None)

    async def post(self, hook: Webhook, change: Change) -> tuple[int | None, str | None, int]:
        started = time.monotonic()

        def elapsed() -> int:
            return int((time.monotonic() - started) * 1000)

        try:
            addresses = await check_url(hook.url, self.config)
        except RefusedURL as exc:
            return None, f"refused: {exc}", elapsed()
        try:
            secret = self.box.open(hook.secret, Purpose.WEBHOOK)
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
