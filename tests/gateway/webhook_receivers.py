"""Webhook receivers on raw loopback sockets, for the delivery tests: one that answers, one that trickles its
headers a byte a second and never ends them, one that reads the request and never answers.

A raw asyncio server (not an HTTP framework) so that a test decides every byte and sees every connection open
and close; it runs in the test's event loop, next to the deliverer under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from schema import webhooks

Mode = Literal["answer", "trickle", "silent"]


@dataclass
class Arrival:
    hook: int
    seq: int
    type: str
    op: str
    at: float  # loop.time() (time.monotonic())
    wall: datetime  # webhooks.now(): comparable with the database's timestamps
    accepted: bool = False  # answered 204


@dataclass
class RawReceiver:
    """`answer`: 204 to each request (500 to the first `fail_first`); `trickle`: a status line, then header bytes
    one a second for ever; `silent`: nothing at all. Counts connections as they open and close."""

    mode: Mode
    fail_first: int = 0
    port: int = 0
    opened: int = 0
    closed: int = 0
    trickled: int = 0  # header bytes sent by trickling
    arrivals: list[Arrival] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def open_now(self) -> int:
        return self.opened - self.closed

    def seqs(self, hook: int) -> list[int]:
        """The seqs of every request made for the hook, in order (retries too)."""
        return [a.seq for a in self.arrivals if a.hook == hook]

    def accepted(self, hook: int) -> list[int]:
        return [a.seq for a in self.arrivals if a.hook == hook and a.accepted]

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        self.opened += 1
        try:
            while await self.exchange(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.closed += 1
            self.tasks.discard(task)
            writer.close()

    async def exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Read one request and answer it as the mode says; False when the connection is done."""
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = json.loads(await reader.readexactly(length))
        event = body["event"]
        loop = asyncio.get_running_loop()
        arrived = Arrival(body["webhookId"], event["seq"], event["type"], event["op"], loop.time(), webhooks.now())
        self.arrivals.append(arrived)
        if self.mode == "answer":
            arrived.accepted = len(self.arrivals) > self.fail_first
            status = b"204 No Content" if arrived.accepted else b"500 Internal Server Error"
            writer.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()
            return True
        if self.mode == "trickle":
            writer.write(b"HTTP/1.1 200 OK\r\nx-slow: ")
            await writer.drain()
        while True:  # trickle or stay silent until the client hangs up
            try:
                if not await asyncio.wait_for(reader.read(1), 1.0):
                    return False
            except TimeoutError:
                if self.mode == "trickle":
                    writer.write(b"a")
                    await writer.drain()
                    self.trickled += 1


@contextlib.asynccontextmanager
async def receiving(mode: Mode, fail_first: int = 0) -> AsyncIterator[RawReceiver]:
    receiver = RawReceiver(mode, fail_first)
    server = await asyncio.start_server(receiver.serve, "127.0.0.1", 0)
    receiver.port = server.sockets[0].getsockname()[1]
    try:
        yield receiver
    finally:
        server.close()
        for task in list(receiver.tasks):
            task.cancel()
        await asyncio.gather(*receiver.tasks, return_exceptions=True)
        await server.wait_closed()
