"""The fan-out's sharing across time (gateway.fanout keeps an account's recent batches by cursor), the rate
limiter's charges of one turn made in one Redis round trip, and the heap keeper's policy for cyclic garbage
(gateway.heap), through a real gateway, a real Redis and CPython's real collector."""

from __future__ import annotations

import asyncio
import gc
import json
import secrets
import sys
import threading
import time
import weakref
from typing import Any

import pytest
from graphql import OperationType
from graphql.execution.collect_fields import FieldDetails
from redis.asyncio import Redis
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import Operation
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from gateway import heap
from gateway.errors import RateLimited
from gateway.fanout import WAKE_SLICE, Batch, Fanout, _Gate, _Waiter
from gateway.graphql import subscriptions
from gateway.limits import COUNT_DELAY, RateLimiter
from gateway.testing import ServerThread, add_folder, deliver
from schema.unit import Store
from tests.conftest import REDIS_URL
from tests.gateway.test_changes import Fresh, mail
from tests.gateway.test_subscriptions import FOLLOW, cursor_now, follow, fresh, seq_of, take, ws_url

__all__ = ["fresh"]  # the fixture, used by name


async def test_a_subscriber_arriving_later_at_a_cursor_shares_the_read_and_the_render(
    gateway: ServerThread, fresh: Fresh, gw_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One subscriber follows a change; a second starts at the same cursor once the first has it all. The second
    gets the same events from the batch the first read (no second read of the log at that cursor, no second
    render of its events): subscribers woken late by a doorbell share the work of those woken first."""
    fanout = gateway.app.state.services.fanout
    reads: list[tuple[int, int]] = []
    renders: list[object] = []
    read = fanout._read
    execute = StrawberryGraphQLCoreExecutionContext.execute_operation

    async def counted_read(account_id: int, after: int, mark: int) -> Batch:
        reads.append((account_id, after))
        batch: Batch = await read(account_id, after, mark)
        return batch

    def counted(self: StrawberryGraphQLCoreExecutionContext, serially: bool | None = None) -> Any:
        if self.operation.operation is OperationType.SUBSCRIPTION:
            renders.append(self.root_value)
        return execute(self, serially)

    monkeypatch.setattr(fanout, "_read", counted_read)
    monkeypatch.setattr(StrawberryGraphQLCoreExecutionContext, "execute_operation", counted)
    start = await cursor_now(fresh)
    await deliver(gw_store, fresh.id, fresh.inbox, [(mail("kept"), [])])
    total = seq_of(await cursor_now(fresh)) - seq_of(start)
    variables = {"acc": fresh.gid, "after": start}
    received = []
    for _ in range(2):
        stream = follow(gateway, fresh.client.token or "", FOLLOW, variables)
        try:
            received.append(await take(stream, total))
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
    assert received[0] == received[1]
    assert reads.count((fresh.id, seq_of(start))) == 1, reads
    assert len(renders) == total


async def test_a_read_that_just_ended_is_not_handed_out_again_after_a_ring(
    gw_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A doorbell rings while a read of the log runs, and wakes a subscriber waiting on the bell before the read's
    done callback has run. That subscriber reads at the same cursor: it must get a read begun after the ring, not
    the ended one, whose empty batch is marked before the ring and would send it from `wait` straight back to
    `read` without the event loop ever turning (a gateway of the balancer test spun so, at 100% CPU, for good)."""
    fanout = Fanout(gw_engine, REDIS_URL)
    account, cursor = 1, 7
    marks: list[int] = []

    async def read(account_id: int, after: int, mark: int) -> Batch:
        marks.append(mark)
        if len(marks) == 1:
            fanout._bells[account_id].ring()  # a commit's doorbell while this read runs
        return Batch(gw_engine, account_id, [], mark)

    monkeypatch.setattr(fanout, "_read", read)
    seen: list[int] = []

    async def subscriber() -> None:
        await fanout.wait(account, 0)  # woken by the ring
        for _ in range(50):  # bounded: the old code went round here for ever
            batch = await fanout.read(account, cursor)
            seen.append(batch.mark)
            if batch.mark == fanout._bells[account].rings:
                return
            await fanout.wait(account, batch.mark)

    async with fanout.listen(account):
        woken = asyncio.create_task(subscriber())
        await asyncio.sleep(0)  # the subscriber waits on the bell
        first = await fanout.read(account, cursor)
        await asyncio.wait_for(woken, 5)
    assert first.mark == 0
    assert marks == [0, 1], marks  # the subscriber's read began after the ring
    assert seen == [1]


async def _frames(gateway: ServerThread, token: str, variables: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """The first `n` messages a raw graphql-transport-ws client receives for FOLLOW, as sent."""
    protocol = [Subprotocol("graphql-transport-ws")]
    async with connect(ws_url(gateway), subprotocols=protocol) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(
            json.dumps({"id": "s1", "type": "subscribe", "payload": {"query": FOLLOW, "variables": variables}})
        )
        async with asyncio.timeout(15):
            return [json.loads(await ws.recv()) for _ in range(n)]


async def test_a_websocket_subscription_writes_its_events_itself_in_the_frames_the_pipeline_sends(
    gateway: ServerThread, fresh: Fresh, gw_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A websocket subscriber's events are written to its socket by its resolver (gateway.render.send_direct),
    not handed through graphql-core's per-event mapping and Strawberry's per-result pipeline (`send_next`); the
    frames are the ones that pipeline sends: same id and type, same data, the same `extensions.cost`."""
    piped: list[object] = []
    send_next = Operation.send_next

    async def counted(self: Operation[Any, Any], result: Any) -> None:
        piped.append(result)
        await send_next(self, result)

    monkeypatch.setattr(Operation, "send_next", counted)
    start = await cursor_now(fresh)
    await deliver(gw_store, fresh.id, fresh.inbox, [(mail("direct"), [])])
    total = seq_of(await cursor_now(fresh)) - seq_of(start)
    variables = {"acc": fresh.gid, "after": start}
    token = fresh.client.token or ""
    direct = await _frames(gateway, token, variables, total)
    assert piped == []

    async def never(context: object, event: object) -> bool:
        return False

    monkeypatch.setattr(subscriptions, "send_direct", never)
    pipeline = await _frames(gateway, token, variables, total)
    assert len(piped) == total

    def shape(frame: dict[str, Any]) -> tuple[Any, ...]:
        cost = frame["payload"]["extensions"]["cost"]
        spent = {k: v for k, v in cost.items() if k not in ("remaining", "resetInSeconds")}  # spent since
        return frame["id"], frame["type"], sorted(frame["payload"]), frame["payload"]["data"], spent, sorted(cost)

    assert [shape(f) for f in direct] == [shape(f) for f in pipeline]
    objects = [f["payload"]["data"]["changes"]["object"] for f in direct]
    assert {"__typename": "Message", "subject": "direct"} in objects


async def test_waiting_subscribers_share_one_timer_for_the_safety_re_read(gw_engine: AsyncEngine) -> None:
    """Subscribers waiting on a bell hold no timer each (500 timers set and cancelled at every event, 10,000 at
    the bench's scale): one ticker rings every bell every `safety_seconds`, which still wakes them all to re-read
    when no doorbell rang (a ring lost while its writer could not reach Redis)."""
    fanout = Fanout(gw_engine, REDIS_URL, safety_seconds=0.3, poll_seconds=0.3)
    fanout.start()
    try:
        async with asyncio.timeout(10):
            while not fanout.connected:
                await asyncio.sleep(0.01)
        loop = asyncio.get_running_loop()
        async with fanout.listen(1):
            timers = len(loop._scheduled)  # type: ignore[attr-defined]  # the loop's pending timer handles
            mark = fanout._bells[1].rings
            waiters = [asyncio.create_task(fanout.wait(1, mark)) for _ in range(500)]
            await asyncio.sleep(0)  # every one of them is waiting now
            assert not any(w.done() for w in waiters)
            assert len(loop._scheduled) - timers < 5  # type: ignore[attr-defined]
            async with asyncio.timeout(3):
                await asyncio.gather(*waiters)  # woken by the ticker: no doorbell rang
    finally:
        await fanout.stop()


async def test_a_doorbell_has_the_log_read_before_it_wakes_the_subscribers(
    gw_engine: AsyncEngine, fresh: Fresh, gw_store: Store
) -> None:
    """A commit's doorbell first reads the log where the subscribers wait, then wakes them: each finds the batch
    kept and sends at once, instead of all of them waking to wait again on one read (with 10,000 subscribers,
    the first event went out only once the last of them had woken)."""
    fanout = Fanout(gw_engine, REDIS_URL)
    fanout.start()
    try:
        async with asyncio.timeout(10):
            while not fanout.connected:
                await asyncio.sleep(0.01)
        async with fanout.listen(fresh.id):
            seq = seq_of(await cursor_now(fresh))
            empty = await fanout.read(fresh.id, seq)
            assert not empty.changes
            found: list[Batch | None] = []

            async def subscriber() -> None:
                await fanout.wait(fresh.id, empty.mark, seq)
                found.append(fanout._kept.get((fresh.id, seq)))

            woken = asyncio.create_task(subscriber())
            await asyncio.sleep(0)  # it waits
            await deliver(gw_store, fresh.id, fresh.inbox, [(mail("prefetched"), [])])
            async with asyncio.timeout(10):
                await woken
    finally:
        await fanout.stop()
    assert found[0] is not None
    assert found[0].changes
    assert found[0].changes[0].seq == seq + 1


async def test_a_subscriber_following_a_commit_costs_one_read_of_the_log(
    gateway: ServerThread, fresh: Fresh, gw_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit rings; the fan-out reads the log once where the subscribers wait; they send its entries and wait
    again without reading the end of the log a second time (the read that found fewer entries than it asked for
    already reached it). Two subscribers, two commits: two reads."""
    fanout = gateway.app.state.services.fanout
    # No safety ring meanwhile (every 10 s it wakes every subscriber to read once more: a third read, seen in a
    # run under load).
    monkeypatch.setattr(fanout, "safety_seconds", 3600.0)
    start = await cursor_now(fresh)
    streams = [follow(gateway, fresh.client.token or "", FOLLOW, {"acc": fresh.gid, "after": start}) for _ in range(2)]
    try:
        firsts = [asyncio.ensure_future(anext(stream)) for stream in streams]
        await asyncio.sleep(0.5)  # subscribed and waiting
        reads = fanout.reads
        for n in range(2):
            before = seq_of(await cursor_now(fresh))
            await deliver(gw_store, fresh.id, fresh.inbox, [(mail(f"read once {n}"), [])], first_uid=n + 1)
            total = seq_of(await cursor_now(fresh)) - before
            for i, stream in enumerate(streams):
                got = [await firsts[i]] + await take(stream, total - 1) if n == 0 else await take(stream, total)
                assert seq_of(got[-1]["changes"]["cursor"]) == before + total
            await asyncio.sleep(0.3)  # time for any read after them
        assert fanout.reads - reads == 2
    finally:
        for stream in streams:
            await stream.aclose()  # type: ignore[attr-defined]


ADDED = """subscription($acc: ID!, $after: String) {
    messageAdded(accountId: $acc, after: $after) { cursor message { id subject unread from { name address } } } }"""


async def test_a_subscriber_sleeps_through_rings_of_changes_it_would_not_send(
    gateway: ServerThread, fresh: Fresh, gw_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`messageAdded` subscribers (the soak's 200) all woke at every flag change, each to find nothing to send. A
    ring whose prefetched batch holds none of the changes a waiter wants moves its cursor past them and leaves it
    asleep; the next message it wants still comes, with the right cursor."""
    opens: list[tuple[bool, int, int]] = []  # (with a batch, waiting, slept through)
    open_gate = _Gate.open

    def recording(
        self: _Gate, after: int | None = None, batch: Batch | None = None, successor: _Gate | None = None
    ) -> bool:
        waiting, kept = len(self.waiters), len(successor.waiters) if successor is not None else 0
        moved = open_gate(self, after, batch, successor)
        opens.append((batch is not None, waiting, (len(successor.waiters) - kept) if successor is not None else 0))
        return moved

    monkeypatch.setattr(_Gate, "open", recording)
    added = follow(gateway, fresh.client.token or "", ADDED, {"acc": fresh.gid, "after": await cursor_now(fresh)})
    try:
        first = asyncio.ensure_future(anext(added))
        await asyncio.sleep(0.5)  # subscribed and waiting
        opens.clear()
        for n in range(3):  # commits of folders: nothing messageAdded sends
            await add_folder(gw_store, fresh.id, f"Elsewhere {n}", None)
            async with asyncio.timeout(10):
                while sum(1 for batch, _, _ in opens if batch) <= n:  # this commit's ring, not an earlier one's
                    await asyncio.sleep(0.02)
        rung = [(waiting, slept) for batch, waiting, slept in opens if batch]
        assert len(rung) >= 3
        assert all(waiting == slept == 1 for waiting, slept in rung), opens
        before = seq_of(await cursor_now(fresh))
        await deliver(gw_store, fresh.id, fresh.inbox, [(mail("wanted"), [])], first_uid=1)
        event = (await asyncio.wait_for(first, 10))["messageAdded"]
    finally:
        if not first.done():  # a failed assertion above: the stream is still being read
            first.cancel()
            await asyncio.gather(first, return_exceptions=True)
        await added.aclose()  # type: ignore[attr-defined]
    assert event["message"]["subject"] == "wanted"
    assert seq_of(event["cursor"]) > before


def _selections() -> int:
    """The selections graphql-core collected that are alive in this process (the gateway's thread included)."""
    gc.unfreeze()  # the gateway's heap keeper froze most of the heap, which gc.get_objects() does not list
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is FieldDetails)


async def test_the_events_a_subscription_renders_leave_nothing_behind(
    gateway: ServerThread, fresh: Fresh, gw_store: Store
) -> None:
    """A subscription lives for hours and renders every event of its account: what a render collects (graphql-
    core's selections, the plans of the plain fields) must go with the event. graphql-core's executor of an event
    shares the subscription's memo of collected subfields, keyed by selections each event collects anew, and
    the memo kept them all (the soak's gateway kept ever more objects, its RSS grew 27% in 10 minutes). Here 5
    events, then 30 more, over `messageAdded` and `changes` on one socket: as many selections alive
    after the 30 as after the 5."""
    token = fresh.client.token or ""
    start = await cursor_now(fresh)
    variables = {"acc": fresh.gid, "after": start}
    protocol = [Subprotocol("graphql-transport-ws")]
    async with connect(ws_url(gateway), subprotocols=protocol) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        for op, query in (("added", ADDED), ("changes", FOLLOW)):
            payload = {"query": query, "variables": variables}
            await ws.send(json.dumps({"id": op, "type": "subscribe", "payload": payload}))
        received = {"added": 0, "changes": 0}

        async def deliver_and_take(messages: int, first_uid: int) -> None:
            before = seq_of(await cursor_now(fresh))
            items: list[tuple[bytes, list[str]]] = [(mail(f"event {first_uid + i}"), []) for i in range(messages)]
            for i, item in enumerate(items):  # one commit each: events of their own, as the sync writes them
                await deliver(gw_store, fresh.id, fresh.inbox, [item], first_uid=first_uid + i)
            wanted = {
                "added": received["added"] + messages,
                "changes": received["changes"] + seq_of(await cursor_now(fresh)) - before,
            }
            async with asyncio.timeout(30):
                while received != wanted:
                    frame = json.loads(await ws.recv())
                    assert frame["type"] == "next", frame
                    assert "errors" not in frame["payload"], frame
                    received[frame["id"]] += 1

        await deliver_and_take(5, 1)
        warm = _selections()
        await deliver_and_take(30, 100)
        after = _selections()
    assert received["added"] == 35
    assert after - warm < 10, (warm, after)


def _counting(limiter: RateLimiter) -> list[int]:
    """The cost of each Redis call `limiter` makes from now on."""
    calls: list[int] = []
    spend = limiter.spend

    async def counted(rate_key: str, cost: int, now: float | None = None) -> tuple[int, int] | None:
        calls.append(cost)
        return await spend(rate_key, cost, now)

    limiter.spend = counted  # type: ignore[method-assign]
    return calls


async def test_charges_of_one_turn_cost_one_round_trip_and_add_up(redis: Redis) -> None:
    """Thousands of subscribers of one token spend their event's cost at the same moment: one Redis call, the
    same points spent as one call each; past the budget, each charge the points left do not cover is refused."""
    limiter = RateLimiter(redis, points=1000, window=60, prefix=f"fanout-test-{secrets.token_hex(4)}:")
    calls = _counting(limiter)
    await asyncio.gather(*(limiter.charge("token:1", 3) for _ in range(300)))
    assert calls == [900]
    outcomes = await asyncio.gather(*(limiter.charge("token:1", 1) for _ in range(200)), return_exceptions=True)
    assert calls == [900, 200]
    refused = [o for o in outcomes if isinstance(o, Exception)]
    assert all("rate limit exceeded" in str(o) for o in refused)
    assert (len(outcomes) - len(refused), len(refused)) == (100, 100)  # the 100 points left paid for 100
    left = await limiter.spend("token:1", 0)
    assert left is not None
    assert left[0] == 1000 - 1100


async def test_a_charge_the_credit_covers_does_not_wait_for_redis(redis: Redis) -> None:
    """After a key's first answer, a charge within what Redis said was left returns at once (a subscriber's event
    is not held for a round trip); the charge still reaches Redis; once the credit is used up, charges wait for
    Redis again and are refused past the budget, exactly where they would have been."""
    limiter = RateLimiter(redis, points=10, window=3600, prefix=f"credit-test-{secrets.token_hex(4)}:")
    release = asyncio.Event()
    spend = limiter.spend
    sent: list[int] = []

    async def held(rate_key: str, cost: int, now: float | None = None) -> tuple[int, int] | None:
        sent.append(cost)
        if len(sent) > 1:
            await release.wait()  # Redis slow to answer every call after the first
        return await spend(rate_key, cost, now)

    limiter.spend = held  # type: ignore[method-assign]
    await limiter.charge("token:1", 4)  # no credit yet: waits for the answer (6 left)
    async with asyncio.timeout(1):
        await limiter.charge("token:1", 3)  # paid from credit while Redis has not answered
        await limiter.charge("token:1", 3)
    waiting = asyncio.ensure_future(limiter.charge("token:1", 1))  # the credit is spent: this one waits
    await asyncio.sleep(0.05)
    assert not waiting.done()
    release.set()
    with pytest.raises(RateLimited):
        await waiting
    assert sum(sent) == 11
    left = await spend("token:1", 0)
    assert left is not None
    assert left[0] == 10 - 11


async def test_a_busy_tokens_credit_paid_charges_reach_redis_together_and_none_is_lost(redis: Redis) -> None:
    """A token answering requests one after another paid each from credit but still made a Redis round trip for
    each (about 0.2 ms of redis-py's CPU). Charges its credit covers now wait up to
    COUNT_DELAY and go in one round trip with what the token spent meanwhile; every point reaches Redis, and
    `flush` (a gateway stopping) sends what is still waiting at once."""
    prefix = f"batch-test-{secrets.token_hex(4)}:"
    limiter = RateLimiter(redis, points=1000, window=3600, prefix=prefix)
    calls = _counting(limiter)

    async def in_redis() -> int:
        keys = await redis.keys(f"inboxql:ratelimit:{prefix}token:1:*")
        return sum([int(await redis.get(key) or 0) for key in keys])

    await limiter.charge("token:1", 5)  # no credit yet: waits for Redis's answer
    for _ in range(20):  # a request each turn, all paid from credit
        await limiter.charge("token:1", 2)
        await asyncio.sleep(0)
    assert calls == [5]  # none sent yet
    async with asyncio.timeout(COUNT_DELAY + 2):
        while await in_redis() != 45:
            await asyncio.sleep(0.01)
    assert calls == [5, 40]  # the twenty in one round trip
    for _ in range(3):
        await limiter.charge("token:1", 1)
    await limiter.flush()
    assert calls == [5, 40, 3]
    assert await in_redis() == 48
    left = await limiter.take("token:1", 0)
    assert left is not None
    assert left[0] == 1000 - 48


class _Node:
    """Something a cycle can hold and a weak reference can watch."""

    other: object = None


async def test_a_ring_wakes_its_waiters_a_slice_per_loop_turn_so_what_arrives_meanwhile_runs_between() -> None:
    """At 200 subscribers a ring woke every one in the same turn of the loop: a request that arrived meanwhile
    waited for all of them (20-40 ms, the soak's p99). Now a slice per turn, with what came in between."""
    gate, order = _Gate(), []
    count = WAKE_SLICE * 3 + 5

    async def waiter(n: int) -> None:
        await gate.wait(_Waiter(None, None))
        order.append(n)

    waiters = [asyncio.create_task(waiter(n)) for n in range(count)]
    await asyncio.sleep(0)  # all waiting
    waiters[1].cancel()  # one leaves before its slice: skipped
    gate.open()
    asyncio.get_running_loop().call_soon(order.append, -1)  # a callback arriving with the ring (a request's I/O)
    await asyncio.gather(*waiters, return_exceptions=True)
    assert sorted(n for n in order if n >= 0) == [n for n in range(count) if n != 1]
    assert order.index(-1) <= WAKE_SLICE  # served after the first slice, not after all of them
    await asyncio.wait_for(gate.wait(_Waiter(None, None)), 1)  # open: a late waiter passes at once


async def test_the_heap_keeper_freezes_survivors_and_sweeps_frozen_cyclic_garbage() -> None:
    alive = _Node()
    alive.other = alive  # a cycle, referenced: it survives the first freeze
    watch = weakref.ref(alive)
    keeper = asyncio.create_task(
        heap.keep(lambda: 0.0, freeze_seconds=0.05, growth=0.5, quiet_seconds=0, recount_seconds=0.1)
    )
    try:
        await asyncio.sleep(0.2)
        assert gc.get_freeze_count() > 0
        del alive  # now cyclic garbage, frozen: no ordinary collection sees it
        gc.collect()
        await asyncio.sleep(0.2)
        assert watch() is not None  # the heap has not grown: no sweep
        # The allocator's blocks in use grow by 3/4 (an empty list is one): a sweep is due.
        grown: list[list[int]] = [[] for _ in range(sys.getallocatedblocks() * 3 // 4)]
        async with asyncio.timeout(5):
            while watch() is not None:  # the sweep frees it
                await asyncio.sleep(0.05)
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
    assert len(grown) > 0
    assert gc.get_freeze_count() == 0


async def test_a_heap_keeper_tick_does_not_walk_the_frozen_heap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counting the frozen heap walks all of it (118-165 ms on the event loop in a soak under load): the keeper
    never counts it, and measures the heap (the allocator's blocks) once every `recount_seconds` at most; the
    survivors are never listed (`gc.get_objects`), which would hand another thread's tuple under construction a
    second reference."""
    counted = 0
    count = sys.getallocatedblocks
    here = threading.get_ident()  # a gateway of the session may run its own keeper in another thread

    def counting() -> int:
        nonlocal counted
        counted += threading.get_ident() == here
        return count()

    def walking() -> int:
        raise AssertionError("the heap keeper walked the frozen heap")

    def listing(generation: int | None = None) -> list[Any]:
        raise AssertionError("the heap keeper listed the survivors")

    monkeypatch.setattr(sys, "getallocatedblocks", counting)
    ticks = 0
    freeze = gc.freeze

    def ticking() -> None:
        nonlocal ticks
        ticks += threading.get_ident() == here
        freeze()

    monkeypatch.setattr(gc, "freeze", ticking)
    started = time.monotonic()
    keeper = asyncio.create_task(
        heap.keep(lambda: 0.0, freeze_seconds=0.01, growth=0.5, quiet_seconds=0, recount_seconds=3)
    )
    try:
        monkeypatch.setattr(gc, "get_objects", listing)
        monkeypatch.setattr(gc, "get_freeze_count", walking)
        async with asyncio.timeout(10):
            while ticks < 20:
                await asyncio.sleep(0.01)
        if time.monotonic() - started < 3:
            assert counted == 1  # at the start only: twenty ticks counted nothing
        async with asyncio.timeout(10):
            while counted < 2:  # once `recount_seconds` have passed
                await asyncio.sleep(0.01)
        assert not keeper.done()
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)


async def test_a_heap_keeper_tick_waits_while_a_fan_out_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """No tick (a young collection and a walk of what survived) while doorbells ring, up to `max_waits` ticks:
    at 10,000 subscribers a tick in the middle of a hand-over held the loop for up to 1.5 s."""
    here = threading.get_ident()
    ticks = 0
    collect = gc.collect

    def counted(generation: int = 2) -> int:
        nonlocal ticks
        ticks += threading.get_ident() == here and generation == 2
        return collect(generation)

    monkeypatch.setattr(gc, "collect", counted)
    busy_until = time.monotonic() + 0.5
    keeper = asyncio.create_task(
        heap.keep(lambda: time.monotonic() if time.monotonic() < busy_until else 0.0, freeze_seconds=0.01, max_waits=3)
    )
    try:
        await asyncio.sleep(0.4)
        busy = ticks  # every fourth interval at most while it rings
        async with asyncio.timeout(10):
            while ticks < busy + 10:  # quiet: every interval again
                await asyncio.sleep(0.01)
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
    assert 0 < busy <= 40 // 4 + 1


async def test_subscribers_starting_together_check_their_cursor_with_one_query(
    gw_engine: AsyncEngine, fresh: Fresh, gw_store: Store
) -> None:
    """The clients of a gateway that died come back at once, thousands with the same cursor: one query checks it
    for all of them (each taking a pooled connection timed the last ones out: INTERNAL errors in the fan-out
    bench at 3,000), and one reads "now" for those without a cursor."""
    await deliver(gw_store, fresh.id, fresh.inbox, [(mail("checked"), [])])
    fanout = Fanout(gw_engine, REDIS_URL)
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(gw_engine.sync_engine, "before_cursor_execute", count)
    try:
        assert await fanout.cursor_valid(fresh.id, 1)
        await fanout.newest(fresh.id)
        alone = len(statements)  # what one subscriber's checks take
        valid = await asyncio.gather(*(fanout.cursor_valid(fresh.id, 1) for _ in range(50)))
        newest = await asyncio.gather(*(fanout.newest(fresh.id) for _ in range(50)))
    finally:
        event.remove(gw_engine.sync_engine, "before_cursor_execute", count)
    assert valid == [True] * 50
    assert len(set(newest)) == 1
    assert newest[0] > 1
    assert len(statements) == 2 * alone, statements


def test_the_collector_pause_nests_and_keeps_a_collector_that_was_off_off() -> None:
    assert gc.isenabled()
    with heap.collector_paused():
        with heap.collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer block still runs
    assert gc.isenabled()
    gc.disable()
    try:
        with heap.collector_paused():
            pass
        assert not gc.isenabled()  # off before: left off
    finally:
        gc.enable()
