"""The Prometheus metrics of both processes, in one place so that their names, units and labels are decided once.

Every name starts with `inboxql_`, counters end in `_total`, durations are in seconds (Prometheus's naming
conventions). Labels take values from small fixed sets only (a state, a kind of error, an operation type, an
outcome): never an account id, a folder name or a query text, whose number grows with the data and would grow the
time series with it.

What each process reports (a metric the process does not touch stays at zero, or absent when it has labels):

    sync process                                     gateway
    inboxql_accounts{state}                          inboxql_graphql_requests_total{operation,outcome}
    inboxql_messages_mirrored_total                  inboxql_graphql_request_seconds{operation}
    inboxql_change_to_commit_seconds                 inboxql_graphql_subscribers
    inboxql_first_message_seconds                    inboxql_webhook_deliveries_total{outcome}
    inboxql_imap_errors_total{kind}
    inboxql_imap_reconnects_total
    inboxql_action_queue_depth, inboxql_outbox_depth
                     both: inboxql_loop_lag_seconds, inboxql_loop_stalls_total (ops.watchdog),
                           inboxql_db_pool_checked_out, inboxql_db_pool_size

The metrics live in prometheus_client's default registry, as that library intends: one process, one set.
`exposition()` renders it for a `/metrics` endpoint (ops.server; the gateway's own route).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = [
    "ACCOUNTS",
    "ACCOUNT_STATES",
    "ACTION_QUEUE",
    "CHANGE_TO_COMMIT",
    "CONTENT_TYPE",
    "FIRST_MESSAGE",
    "GRAPHQL_LATENCY",
    "GRAPHQL_REQUESTS",
    "IMAP_ERRORS",
    "IMAP_ERROR_KINDS",
    "LOOP_LAG",
    "LOOP_STALLS",
    "MESSAGES_MIRRORED",
    "OPERATIONS",
    "OUTBOX",
    "RECONNECTS",
    "SUBSCRIBERS",
    "WEBHOOK_DELIVERIES",
    "exposition",
    "set_accounts",
    "track_pool",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Sub-millisecond to a minute: a loop's lag, a query, a push of new mail all land inside.
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# A new account's first message comes after a login and a LIST: seconds to minutes.
_ONBOARDING = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)

# -- the event loop (ops.watchdog) ----------------------------------------------------------------------------
LOOP_LAG = Histogram(
    "inboxql_loop_lag_seconds",
    "How late the event loop ran the watchdog's heartbeat: the time a ready callback waits for the loop.",
    buckets=_SECONDS,
)
LOOP_STALLS = Counter(
    "inboxql_loop_stalls_total",
    "Times the event loop did not come back within the stall threshold (INBOXQL_STALL_MS); each is logged once "
    "with the loop thread's stack.",
)

# -- the sync process -----------------------------------------------------------------------------------------
ACCOUNT_STATES = ("pending", "syncing", "ready", "error", "auth_failed", "removing")
ACCOUNTS = Gauge(
    "inboxql_accounts", "Accounts by sync state, as the sync process last read them (every rescan).", ["state"]
)
MESSAGES_MIRRORED = Counter(
    "inboxql_messages_mirrored_total", "Messages the sync process stored as new in the mirror (committed)."
)
CHANGE_TO_COMMIT = Histogram(
    "inboxql_change_to_commit_seconds",
    "From noticing a change on the server (an IDLE push, or the SELECT of a poll that found it) to the commit "
    "that mirrored it.",
    buckets=_SECONDS,
)
FIRST_MESSAGE = Histogram(
    "inboxql_first_message_seconds",
    "From the start of a new account's first sync (its mirror empty) to the commit of its first message.",
    buckets=_ONBOARDING,
)
IMAP_ERROR_KINDS = ("auth", "refused", "timeout", "connection", "protocol", "database", "other")
IMAP_ERRORS = Counter(
    "inboxql_imap_errors_total",
    "Errors that stopped an account's connection (it reconnects) or a folder's sync (it is retried), by kind.",
    ["kind"],
)
RECONNECTS = Counter("inboxql_imap_reconnects_total", "Times an account's sync started again after an error.")
LEASES_HELD = Gauge("inboxql_leases_held", "Accounts whose lease this sync process holds.")
LEASE_REFUSALS = Counter(
    "inboxql_lease_refusals_total", "Units of work refused because this process had lost the account's lease."
)
ACTION_QUEUE = Gauge("inboxql_action_queue_depth", "Write-back actions waiting to be performed on the server.")
OUTBOX = Gauge("inboxql_outbox_depth", "Outgoing messages queued or being sent.")

# -- the gateway --------------------------------------------------------------------------------------------
OPERATIONS = ("query", "mutation", "subscription", "invalid")  # invalid: no operation could be read
GRAPHQL_REQUESTS = Counter(
    "inboxql_graphql_requests_total",
    "GraphQL operations by type and outcome (error: the response holds an error); a subscription counts when "
    "it starts.",
    ["operation", "outcome"],
)
GRAPHQL_LATENCY = Histogram(
    "inboxql_graphql_request_seconds",
    "Time to execute a GraphQL query or mutation (from its parse to its result).",
    ["operation"],
    buckets=_SECONDS,
)
SUBSCRIBERS = Gauge("inboxql_graphql_subscribers", "GraphQL subscriptions running in this process.")
WEBHOOK_DELIVERIES = Counter(
    "inboxql_webhook_deliveries_total",
    "Webhook delivery attempts by outcome (failed: not a 2xx in time; the event is retried).",
    ["outcome"],
)

for _state in ACCOUNT_STATES:
    ACCOUNTS.labels(_state)
for _kind in IMAP_ERROR_KINDS:
    IMAP_ERRORS.labels(_kind)
for _operation in OPERATIONS:
    for _outcome in ("ok", "error"):
        GRAPHQL_REQUESTS.labels(_operation, _outcome)
for _operation in ("query", "mutation"):
    GRAPHQL_LATENCY.labels(_operation)
for _outcome in ("ok", "failed"):
    WEBHOOK_DELIVERIES.labels(_outcome)


def set_accounts(states: Iterable[str]) -> None:
    """The accounts gauge from the states of every account (one string per account); states not listed in
    ACCOUNT_STATES are left out rather than opening a new label value."""
    counts = dict.fromkeys(ACCOUNT_STATES, 0)
    for state in states:
        if state in counts:
            counts[state] += 1
    for state, n in counts.items():
        ACCOUNTS.labels(state).set(n)


# -- database pools: read when scraped ------------------------------------------------------------------------

PoolUse = Callable[[], tuple[int, int]]  # () -> (connections checked out, the most the pool hands out)


class _Pools(Collector):
    """Connection pool use, read at scrape time from each tracked pool and summed (a process normally has one;
    tests run several apps in one process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pools: dict[int, PoolUse] = {}
        self._next = 0

    def add(self, use: PoolUse) -> Callable[[], None]:
        with self._lock:
            key = self._next
            self._next += 1
            self._pools[key] = use

        def remove() -> None:
            with self._lock:
                self._pools.pop(key, None)

        return remove

    def collect(self) -> Iterable[GaugeMetricFamily]:
        with self._lock:
            uses = list(self._pools.values())
        checked_out = size = 0
        for use in uses:
            try:
                out, most = use()
            except Exception:  # a disposed pool counts for nothing; a scrape must not fail for it
                out = most = 0
            checked_out += out
            size += most
        yield GaugeMetricFamily(
            "inboxql_db_pool_checked_out", "Database connections in use (checked out of the pool).", checked_out
        )
        yield GaugeMetricFamily(
            "inboxql_db_pool_size", "Database connections the pool may hand out (its size plus overflow).", size
        )


_POOLS = _Pools()
REGISTRY.register(_POOLS)


def track_pool(use: PoolUse) -> Callable[[], None]:
    """Report a connection pool's use in the pool gauges until the returned function is called."""
    return _POOLS.add(use)


def exposition() -> bytes:
    """Every metric of this process in Prometheus's text format (served with CONTENT_TYPE)."""
    return generate_latest(REGISTRY)
