"""Gateway settings next to the process-wide `schema.settings.Settings`: limits and switches."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from ops.sampler import ProfilerConfig


def _flag(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    max_depth: int = 12
    max_tokens: int = 5000
    max_aliases: int = 30
    max_cost: int = 5000
    # Each token may spend this many cost points per window (GitHub-style: cost, not request count).
    rate_limit_points: int = 100_000
    rate_limit_window_seconds: int = 60
    # When Redis cannot count (down, or silent past its short timeout): serve unthrottled (True), or refuse with
    # RATE_LIMITED (False). Open by default: Redis holds no data, and a dead Redis should not take reads down.
    rate_limit_fail_open: bool = True
    # Introspection for requests with a token; for anonymous ones (only introspection and __typename answer
    # without a token) too, unless `anonymous_introspection` is off. On by default: the schema is published
    # (gateway/schema.graphql), and GraphiQL reads it before a token is pasted.
    introspection: bool = True
    anonymous_introspection: bool = True
    # Anonymous requests and introspection queries (anyone's) per client address and rate-limit window.
    address_rate_limit: int = 300
    # A token's grant is cached this long in the process: a revocation takes effect within it. A grant used past
    # half of it is looked up again in the background (gateway.auth), so a busy token's requests never wait for it.
    token_cache_seconds: float = 10.0
    download_link_seconds: int = 3600
    # Webhooks (gateway.delivery): delivered by this process unless switched off.
    # Websockets: browsers on other origins are refused unless listed here (non-browser clients send no
    # Origin); each connection may hold this many subscriptions at once.
    allowed_origins: tuple[str, ...] = ()
    max_subscriptions_per_connection: int = 50
    # Websockets and graphql-sse streams one token may hold open in one process (beyond: 4429 / 429).
    max_streams_per_token: int = 50
    # A websocket must send connection_init within this (else 4408); an anonymous one is closed after it (4401).
    ws_init_seconds: float = 5.0
    # permessage-deflate costs ~50 KiB of zlib state per websocket, more than everything else a subscriber
    # holds, and gains little on small JSON events: off unless asked for (Node's ws server decides the same).
    ws_compression: bool = False
    webhooks: bool = True
    webhook_allow_private: bool = False
    webhook_allow_loopback: bool = False
    # One attempt's total deadline: resolving, connecting, sending, and the receiver's status line and headers.
    webhook_timeout_seconds: float = 10.0
    # Delivery wakes on the account's doorbell; the database is polled for due hooks every
    # `webhook_safety_seconds` while the doorbell subscription is up (a ring can be lost), every
    # `webhook_poll_seconds` while it is down. A ring for an account with no hook known to the process re-reads
    # the hooks at most every `webhook_discover_seconds` (how soon a new or re-enabled hook is noticed).
    webhook_poll_seconds: float = 1.0
    webhook_safety_seconds: float = 10.0
    webhook_discover_seconds: float = 1.0
    # Hooks delivered at once by one process: this many in good standing, and apart from them this many whose
    # last attempt failed or took over a quarter of the deadline (slow receivers cannot take the others' slots).
    webhook_concurrency: int = 4
    webhook_slow_concurrency: int = 4
    # The delivery log keeps each hook's newest attempts, this many, none older than this (30 days).
    webhook_log_keep: int = 1000
    webhook_log_max_age_seconds: float = 30 * 24 * 3600.0
    webhook_backoff_base_seconds: float = 1.0
    webhook_backoff_cap_seconds: float = 3600.0
    # A hook failing continuously for this long is disabled (3 days).
    webhook_disable_after_seconds: float = 3 * 24 * 3600.0
    # Sending: a message without sendAt waits this long in the outbox, so that cancelSend can take it back
    # (0: sent at once). Uploads (POST /uploads) larger than this are refused with 413.
    undo_send_seconds: float = 5.0
    max_upload_bytes: int = 25 * 1024 * 1024
    # Expired uploads (schema.uploads) are pruned by every gateway process this often.
    upload_prune_seconds: float = 3600.0
    # A request body (GraphQL over HTTP and SSE; uploads have their own cap) or websocket message larger than
    # this is refused: 413 before the body is read (by Content-Length, else as soon as it passes), 1009 on a socket.
    max_body_bytes: int = 1024 * 1024
    # Subscriptions one token may run at once in one process, over all its websockets and event streams.
    max_subscriptions_per_token: int = 100
    # uvicorn's limit_concurrency: beyond this many connections and tasks at once, new requests get a 503.
    max_concurrency: int = 2000
    # A client address whose requests carry this many unknown tokens within `auth_failure_window_seconds` gets
    # 429 for unknown tokens until the window ends (tokens it already showed valid still work).
    max_auth_failures: int = 20
    auth_failure_window_seconds: float = 60.0
    # The always-on stack sampler behind /debug/profile (ops.sampler: INBOXQL_PROFILE_*; hz 0 switches it off).
    profiler: ProfilerConfig = field(default_factory=ProfilerConfig)
    # The OAuth2 consent flow (gateway.consent): the INBOXQL_OAUTH2_* settings (providers by name, oauth.providers),
    # the gateway's public address (for the redirect URI the provider sends the browser back to; default: the
    # address the start link was requested at) and the page to land on afterwards (default: a built-in one).
    oauth2_env: tuple[tuple[str, str], ...] = ()
    oauth2_public_url: str | None = None
    oauth2_done_url: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewayConfig:
        env = os.environ if env is None else env
        base = cls()
        return cls(
            max_depth=int(env.get("INBOXQL_GATEWAY_MAX_DEPTH", base.max_depth)),
            max_tokens=int(env.get("INBOXQL_GATEWAY_MAX_TOKENS", base.max_tokens)),
            max_aliases=int(env.get("INBOXQL_GATEWAY_MAX_ALIASES", base.max_aliases)),
            max_cost=int(env.get("INBOXQL_GATEWAY_MAX_COST", base.max_cost)),
            rate_limit_points=int(env.get("INBOXQL_GATEWAY_RATE_LIMIT_POINTS", base.rate_limit_points)),
            rate_limit_window_seconds=int(env.get("INBOXQL_GATEWAY_RATE_LIMIT_WINDOW", base.rate_limit_window_seconds)),
            rate_limit_fail_open=_flag(env.get("INBOXQL_GATEWAY_RATE_LIMIT_FAIL_OPEN", "1")),
            introspection=_flag(env.get("INBOXQL_GATEWAY_INTROSPECTION", "1")),
            anonymous_introspection=_flag(env.get("INBOXQL_GATEWAY_ANONYMOUS_INTROSPECTION", "1")),
            address_rate_limit=int(env.get("INBOXQL_GATEWAY_ADDRESS_RATE_LIMIT", base.address_rate_limit)),
            token_cache_seconds=float(env.get("INBOXQL_GATEWAY_TOKEN_CACHE_SECONDS", base.token_cache_seconds)),
            allowed_origins=tuple(
                o.strip() for o in env.get("INBOXQL_GATEWAY_ALLOWED_ORIGINS", "").split(",") if o.strip()
            ),
            max_subscriptions_per_connection=int(
                env.get("INBOXQL_GATEWAY_MAX_SUBSCRIPTIONS", base.max_subscriptions_per_connection)
            ),
            max_streams_per_token=int(env.get("INBOXQL_GATEWAY_MAX_STREAMS_PER_TOKEN", base.max_streams_per_token)),
            ws_init_seconds=float(env.get("INBOXQL_GATEWAY_WS_INIT_SECONDS", base.ws_init_seconds)),
            ws_compression=_flag(env.get("INBOXQL_GATEWAY_WS_COMPRESSION", "0")),
            webhooks=_flag(env.get("INBOXQL_WEBHOOKS", "1")),
            webhook_allow_private=_flag(env.get("INBOXQL_WEBHOOK_ALLOW_PRIVATE", "0")),
            webhook_allow_loopback=_flag(env.get("INBOXQL_WEBHOOK_ALLOW_LOOPBACK", "0")),
            webhook_disable_after_seconds=float(
                env.get("INBOXQL_WEBHOOK_DISABLE_AFTER_SECONDS", base.webhook_disable_after_seconds)
            ),
            webhook_timeout_seconds=float(env.get("INBOXQL_WEBHOOK_TIMEOUT_SECONDS", base.webhook_timeout_seconds)),
            webhook_concurrency=int(env.get("INBOXQL_WEBHOOK_CONCURRENCY", base.webhook_concurrency)),
            webhook_slow_concurrency=int(env.get("INBOXQL_WEBHOOK_SLOW_CONCURRENCY", base.webhook_slow_concurrency)),
            webhook_log_keep=max(1, int(env.get("INBOXQL_WEBHOOK_LOG_KEEP", base.webhook_log_keep))),
            webhook_log_max_age_seconds=float(
                env.get("INBOXQL_WEBHOOK_LOG_MAX_AGE_SECONDS", base.webhook_log_max_age_seconds)
            ),
            undo_send_seconds=float(env.get("INBOXQL_GATEWAY_UNDO_SEND_SECONDS", base.undo_send_seconds)),
            max_upload_bytes=int(env.get("INBOXQL_GATEWAY_MAX_UPLOAD_BYTES", base.max_upload_bytes)),
            max_body_bytes=int(env.get("INBOXQL_GATEWAY_MAX_BODY_BYTES", base.max_body_bytes)),
            max_subscriptions_per_token=int(
                env.get("INBOXQL_GATEWAY_MAX_SUBSCRIPTIONS_PER_TOKEN", base.max_subscriptions_per_token)
            ),
            max_concurrency=int(env.get("INBOXQL_GATEWAY_MAX_CONCURRENCY", base.max_concurrency)),
            max_auth_failures=int(env.get("INBOXQL_GATEWAY_MAX_AUTH_FAILURES", base.max_auth_failures)),
            auth_failure_window_seconds=float(
                env.get("INBOXQL_GATEWAY_AUTH_FAILURE_WINDOW", base.auth_failure_window_seconds)
            ),
            profiler=ProfilerConfig.from_env(env),
            oauth2_env=tuple(sorted((k, v) for k, v in env.items() if k.startswith("INBOXQL_OAUTH2_"))),
            oauth2_public_url=env.get("INBOXQL_OAUTH2_PUBLIC_URL") or None,
            oauth2_done_url=env.get("INBOXQL_OAUTH2_DONE_URL") or None,
        )
