"""Webhook delivery: a background task of the gateway process, started in the app's lifespan.

Why here and not in synccore: a delivery only reads the change log and writes the hook's own rows, which is
what the gateway already does (it depends on schema, never on synccore); the sync core's processes are sized
for IMAP connections and hold account leases, while any number of gateways may run, each delivering the hooks
it can claim (schema.webhooks.claim: one attempt per hook at a time across processes). No new process to deploy.

When to try: the account's doorbell (the process's one subscription, gateway.fanout) wakes the deliverer for
that account's due hooks within milliseconds; a slower poll of the database covers lost doorbells, and the
usual one while the doorbell is down (see `Deliverer`).

Per hook, events go out one per POST in seq order, and event N+1 is never sent before N succeeded (2xx).
A failure is retried after an exponential backoff with full jitter, kept in the database so it survives a
restart; a hook failing for longer than `webhook_disable_after` is disabled and says why.

A receiver decides how fast it answers, so no receiver may hold more than its own attempt:
- an attempt has one total deadline (`webhook_timeout_seconds`: resolving, connecting, sending, and the status
  line and headers), not only per-read timeouts, which a receiver trickling a byte a second never trips;
- the POST is made between two short transactions (schema.webhooks: claim, commit, post, settle), never inside
  one: no row lock and no pooled connection is held while a receiver takes its time;
- hooks whose last attempt failed or was slow get slots of their own (`webhook_slow_concurrency`), so however
  many of them there are, the hooks in good standing keep theirs (`webhook_concurrency`).
Each attempt is logged; the log keeps each hook's newest `webhook_log_keep` attempts, none older than
`webhook_log_max_age_seconds` (pruned as each attempt is logged).

Over several shards (schema.shards) a hook lives on its account's shard: the gateway runs one deliverer per shard
(`deliverers`), each reading its shard's hooks and hearing only its accounts' doorbells.

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
import os
import random
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.config import GatewayConfig
from ops import metrics
from schema import webhooks
from schema.changelog import Change
from schema.crypto import CredentialBox, CredentialError, Purpose
from schema.db import session_factory
from schema.shards import shard_of

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
            # Not the address itself: what a private name resolves to is the network's business, not the hook's.
            raise RefusedURL(f"the webhook URL resolves to {why}")
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


def payload(hook_id: int, account_id: int, change: Change) -> bytes:
    event = {
        "id": f"{account_id}:{change.seq}",
        "seq": change.seq,
        "accountId": account_id,
        "type": change.object_type.value,
        "objectId": change.object_id,
        "op": change.op.value,
        "data": change.data,
        "createdAt": change.created_at.isoformat() + "Z",
    }
    return json.dumps({"webhookId": hook_id, "event": event}, separators=(",", ":"), default=str).encode()


def failure(exc: httpx.HTTPError) -> str:
    """What went wrong, in words that quote no address: the OS's messages do ("Connect call failed ('10.0.0.5',
    80)"), and what a name resolves to inside a private network is not the hook owner's business."""
    reason = ""
    cause: BaseException | None = exc
    while cause is not None and not reason:
        if isinstance(cause, ssl.SSLError):
            reason = f"TLS: {cause.reason or 'handshake failed'}"
        elif isinstance(cause, OSError) and isinstance(cause.errno, int) and cause.errno > 0:
            reason = os.strerror(cause.errno)
        cause = cause.__cause__ or cause.__context__
    for kind, words in FAILURES:
        if isinstance(exc, kind):
            return f"{words} ({reason})" if reason else words
    return f"{type(exc).__name__} ({reason})" if reason else type(exc).__name__


FAILURES: tuple[tuple[type[httpx.HTTPError], str], ...] = (
    (httpx.ConnectTimeout, "timed out connecting"),
    (httpx.ConnectError, "could not connect"),
    (httpx.WriteTimeout, "timed out sending"),
    (httpx.ReadTimeout, "timed out waiting for the response"),
    (httpx.TimeoutException, "timed out"),
    (httpx.WriteError, "the connection failed while sending"),
    (httpx.ReadError, "the connection failed while reading the response"),
    (httpx.RemoteProtocolError, "the receiver broke the HTTP protocol (or closed the connection)"),
    (httpx.UnsupportedProtocol, "unsupported protocol"),
)
# An attempt slower than this share of the deadline moves its hook to the slow lane (as a failure does).
SLOW_SHARE = 0.25
# A claim lapses this long after the attempt's deadline (its process is presumed dead; another may send again).
CLAIM_MARGIN_SECONDS = 10.0


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
    - ready hooks are drained in two lanes: `webhook_concurrency` at a time of those in good standing, and
      `webhook_slow_concurrency` at a time of those whose last attempt failed or took over `SLOW_SHARE` of the
      deadline (`slow`); a hook that turns slow while it drains leaves for its lane. A hook rung while it drains
      drains once more (its last read may predate the commit that rang).
    What this process knows of the hooks (`hooks`, `waiting`, `slow`) only chooses what to try: a stale entry
    costs one short transaction, and `attempt` checks the hook under its lock.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        box: CredentialBox,
        config: GatewayConfig,
        doorbells: Doorbells | None = None,
        *,
        shard: int | None = None,
    ) -> None:
        self.sessions = session_factory(engine)
        # With several shards, one deliverer per shard, each hearing only its own accounts' doorbells (they all
        # ring in one namespace: schema.shards); None: every ring is this one's (a single server).
        self.shard = shard
        self.box = box
        self.config = config
        self.doorbells = doorbells
        self.busy: dict[int, asyncio.Task[None]] = {}
        self.lanes: dict[int, bool] = {}  # busy hook -> whether it drains in the slow lane
        self.slow: set[int] = set()  # hooks whose last attempt failed or was slow
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
        elif self.shard is not None and shard_of(account_id) != self.shard:
            return
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
        slow = set()
        behind: set[int] = set()
        for hook_id, account_id, next_attempt_at, late, failing in rows:
            self.hooks.setdefault(account_id, set()).add(hook_id)
            if next_attempt_at is not None:
                self.waiting[hook_id] = next_attempt_at
            if late:
                behind.add(hook_id)
            if failing or hook_id in self.slow:  # slowness is known only here, from this process's attempts
                slow.add(hook_id)
        self.slow = slow
        return behind

    def start(self, now: datetime) -> None:
        """Drain the ready hooks that are due, lowest id first, while their lane has a free slot."""
        used = {False: 0, True: 0}
        for slow in self.lanes.values():
            used[slow] += 1
        limits = {False: self.config.webhook_concurrency, True: self.config.webhook_slow_concurrency}
        for hook_id in sorted(self.ready):
            if hook_id in self.busy:
                self.ready.discard(hook_id)
                self.again.add(hook_id)
                continue
            if not self.due(hook_id, now):
                self.ready.discard(hook_id)
                continue
            slow = hook_id in self.slow
            if used[slow] >= limits[slow]:
                continue  # stays ready: it starts when a drain of its lane ends
            used[slow] += 1
            self.ready.discard(hook_id)
            self.lanes[hook_id] = slow
            self.busy[hook_id] = asyncio.create_task(self.drain(hook_id, slow), name=f"webhook-{hook_id}")

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

    async def drain(self, hook_id: int, slow: bool) -> None:
        """Send this hook's events until it is caught up, fails, turns slow, or another process holds it."""
        try:
            while True:
                self.again.discard(hook_id)
                while not self.stopping.is_set() and await self.attempt(hook_id) and not self.moved(hook_id, slow):
                    pass
                if self.moved(hook_id, slow):
                    self.ready.add(hook_id)  # it goes on in the slow lane (when due, and a slot there is free)
                    break
                if self.stopping.is_set() or hook_id not in self.again or not self.due(hook_id, webhooks.now()):
                    break
        except Exception:
            log.exception("webhook %s: delivery failed unexpectedly", hook_id)
        finally:
            self.busy.pop(hook_id, None)
            self.lanes.pop(hook_id, None)
            self.again.discard(hook_id)
            self.wakeup.set()  # a slot is free for the hooks still ready

    def moved(self, hook_id: int, slow: bool) -> bool:
        """Whether a hook draining in the lane of hooks in good standing has turned slow (failed, or was slow)."""
        return not slow and hook_id in self.slow

    async def attempt(self, hook_id: int) -> bool:
        """One attempt: claim (a short transaction), POST (none), settle (another short one); True when it
        succeeded and more may follow."""
        self.attempts += 1
        deadline = self.config.webhook_timeout_seconds
        async with self.sessions() as session, session.begin():
            now = webhooks.now()
            hook, claimed = await webhooks.claim(
                session, hook_id, now, timedelta(seconds=deadline + CLAIM_MARGIN_SECONDS)
            )
            if hook is None:
                return False
            state, until = hook.state, webhooks.busy_until(hook, now)
        if claimed is None:  # nothing to send, or it waits (its backoff, another process's claim), or disabled
            self.remember(hook.account_id, hook_id, state, until)
            return False
        # Committed: the hook's row is free, and no connection is held, while the receiver takes its time.
        status, error, elapsed = await self.post(claimed)
        ok = error is None and status is not None and 200 <= status < 300
        metrics.WEBHOOK_DELIVERIES.labels("ok" if ok else "failed").inc()
        if not ok and error is None:
            error = f"HTTP {status}"
        if ok and elapsed <= deadline * SLOW_SHARE * 1000:
            self.slow.discard(hook_id)
        else:
            self.slow.add(hook_id)
        config = self.config
        async with self.sessions() as session, session.begin():
            hook = await webhooks.settle(
                session,
                claimed,
                status_code=status,
                error=error,
                duration_ms=elapsed,
                ok=ok,
                now=webhooks.now(),
                retry_in=timedelta(
                    seconds=backoff(
                        hook.failures, config.webhook_backoff_base_seconds, config.webhook_backoff_cap_seconds
                    )
                ),
                disable_after=timedelta(seconds=config.webhook_disable_after_seconds),
                keep=config.webhook_log_keep,
                keep_for=timedelta(seconds=config.webhook_log_max_age_seconds),
            )
            if hook is None:  # deleted meanwhile, or its claim lapsed and another attempt owns it
                return False
            state, until = hook.state, hook.next_attempt_at
        # Committed: remember what it decided (a failed commit leaves the entries to the next read).
        self.remember(claimed.account_id, hook_id, state, until)
        return ok

    def remember(self, account_id: int, hook_id: int, state: str, until: datetime | None) -> None:
        if state != webhooks.ACTIVE:
            self.forget(account_id, hook_id)
        elif until is None:
            self.waiting.pop(hook_id, None)
        else:
            self.waiting[hook_id] = until

    def forget(self, account_id: int, hook_id: int) -> None:
        hooks = self.hooks.get(account_id)
        if hooks is not None:
            hooks.discard(hook_id)
            if not hooks:
                del self.hooks[account_id]
        self.waiting.pop(hook_id, None)

    async def post(self, claimed: webhooks.Claim) -> tuple[int | None, str | None, int]:
        """POST the claimed event within the attempt's deadline: (status, error, milliseconds taken)."""
        started = time.monotonic()
        deadline = self.config.webhook_timeout_seconds

        def elapsed() -> int:
            return int((time.monotonic() - started) * 1000)

        try:
            async with asyncio.timeout(deadline):
                status, error = await self.send(claimed)
        except TimeoutError:
            return None, f"no response within {deadline:g}s", elapsed()
        return status, error, elapsed()

    async def send(self, claimed: webhooks.Claim) -> tuple[int | None, str | None]:
        try:
            addresses = await check_url(claimed.url, self.config)
        except RefusedURL as exc:
            return None, f"refused: {exc}"
        try:
            secret = self.box.open(claimed.secret, Purpose.WEBHOOK)
        except CredentialError as exc:
            return None, str(exc)
        target, host, extensions = pinned(claimed.url, addresses[0])
        change = claimed.change
        body = payload(claimed.hook_id, claimed.account_id, change)
        headers = {
            **host,
            "content-type": "application/json",
            "user-agent": "inboxql-webhooks/1",
            SIGNATURE_HEADER: sign(secret, int(time.time()), body),
            EVENT_HEADER: f"{claimed.account_id}:{change.seq}",
        }
        try:
            # Streamed and never read: only the status matters, and a receiver's body could be any size.
            request = self.http.stream("POST", target, content=body, headers=headers, extensions=extensions)
            async with request as response:
                return response.status_code, None
        except httpx.HTTPError as exc:
            return None, failure(exc)


@contextlib.asynccontextmanager
async def running_each(deliverers: Sequence[Deliverer]) -> AsyncIterator[None]:
    """Run every shard's deliverer for the life of the block (`running`, each)."""
    async with contextlib.AsyncExitStack() as stack:
        for deliverer in deliverers:
            await stack.enter_async_context(running(deliverer))
        yield


def deliverers(
    engines: Mapping[int, AsyncEngine], box: CredentialBox, config: GatewayConfig, doorbells: Doorbells
) -> list[Deliverer]:
    """A deliverer per shard (a hook lives on its account's shard); one, hearing every ring, on a single server."""
    if len(engines) == 1:
        return [Deliverer(engine, box, config, doorbells) for engine in engines.values()]
    return [Deliverer(engine, box, config, doorbells, shard=n) for n, engine in sorted(engines.items())]


@contextlib.asynccontextmanager
async def running(deliverer: Deliverer | None) -> AsyncIterator[None]:
    """Run the deliverer for the life of the block (None: nothing to run).

    On the way out the attempts in flight may finish (each within its deadline), so a graceful restart sends
    nothing twice; a cancelled attempt leaves its claim to lapse, and its event is sent again then (the receiver
    dedups by event id).
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
            await asyncio.wait_for(asyncio.shield(task), deliverer.config.webhook_timeout_seconds + 5)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
