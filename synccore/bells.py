"""The bells of one sync process: one Redis subscription, an asyncio.Event per account, one per round loop.

A mutation rings `inboxql:actions:<account>` after it commits (schema.unit). The executor of that account
(synccore.actions) waits on its event; while Redis is away, executors fall back to their safety timer, so a
lost ring delays an action but never loses it (the queue is in MySQL).

An account added, removed or re-authorized rings `inboxql:accounts` (schema.accounts): every round bell is set
and the supervisor's next round of each shard starts at once (synccore.supervisor); a lost ring waits for the
round's timer.
"""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis

from schema import doorbell
from synccore.backoff import Backoff

log = logging.getLogger(__name__)


class Bells:
    def __init__(self, redis: Redis, doorbells: doorbell.Doorbells) -> None:
        self.redis = redis
        self.doorbells = doorbells
        self._events: dict[int, asyncio.Event] = {}
        self._rounds: list[asyncio.Event] = []

    def round_bell(self) -> asyncio.Event:
        """An event set when the accounts bell rings, one for each round loop (the supervisor runs one per
        shard): each clears its own, so none eats another's ring."""
        bell = asyncio.Event()
        self._rounds.append(bell)
        return bell

    def _accounts_rang(self) -> None:
        for bell in self._rounds:
            bell.set()

    def event(self, account_id: int) -> asyncio.Event:
        found = self._events.get(account_id)
        if found is None:
            found = self._events[account_id] = asyncio.Event()
        return found

    def ring_all(self) -> None:
        """After a gap in the subscription, rings may have been missed: every executor looks once, and so does
        the supervisor."""
        for event in self._events.values():
            event.set()
        self._accounts_rang()

    async def run(self) -> None:
        backoff = Backoff(0.5, 10.0)
        accounts = self.doorbells.accounts_channel
        while True:
            try:
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                try:
                    await pubsub.psubscribe(self.doorbells.actions_pattern)
                    await pubsub.subscribe(self.doorbells.accounts_channel)
                    self.ring_all()
                    backoff.reset()
                    while True:
                        message = await pubsub.get_message(timeout=5.0)
                        if message is None:
                            await pubsub.ping()
                            continue
                        channel = message.get("channel")
                        if channel in (accounts, accounts.encode()):
                            self._accounts_rang()
                            continue
                        account = self.doorbells.account_of(channel)
                        if account is not None and account in self._events:
                            self._events[account].set()
                finally:
                    await pubsub.aclose()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = backoff.next()
                log.warning("action bells: %s; listening again in %.1f s", exc, delay)
                await asyncio.sleep(delay)
