"""A TCP proxy between a client and a server (Dovecot) that makes the link slow or stalls it: a real fault.

`rate` limits the bytes per second from the server to the client (None: as fast as loopback). `stall_once_after`
freezes, for good and in both directions, the first connection to have received that many bytes from the server:
the sockets stay open and nothing passes, as on a dead route. Later connections flow. Each connection's fate is
in `links` (bytes relayed, stalled or not, closed by the client or not).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass(slots=True)
class Link:
    received: int = 0  # bytes relayed from the server to the client
    stalled: bool = False
    client_closed: bool = False  # the client side hung up (seen as EOF or a reset)
    stalled_at: float | None = None
    closed_at: float | None = None
    writers: list[asyncio.StreamWriter] = field(default_factory=list)


class Throttle:
    def __init__(self, target_host: str, target_port: int, *, rate: float | None = None) -> None:
        self.target = (target_host, target_port)
        self.rate = rate
        self.stall_once_after: int | None = None
        self.port = 0
        self.links: list[Link] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Throttle:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
        for link in self.links:
            for writer in link.writers:
                writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        link = Link()
        self.links.append(link)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            link.writers += [writer, up_writer]
            await asyncio.gather(self._up(link, reader, up_writer), self._down(link, up_reader, writer))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)

    async def _up(self, link: Link, client: asyncio.StreamReader, server: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await client.read(1 << 16):
                if link.stalled:
                    continue  # swallowed: a dead route, but the client's hang-up is still seen
                server.write(data)
                await server.drain()
        link.client_closed = True
        link.closed_at = asyncio.get_running_loop().time()

    async def _down(self, link: Link, server: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        # Slices of a tenth of a second's worth, so that a slow link still moves several times a second.
        piece = max(1024, int(self.rate / 10)) if self.rate else 1 << 16
        with contextlib.suppress(OSError):
            while data := await server.read(piece):
                trip = self.stall_once_after
                if trip is not None and link.received + len(data) > trip and not any(k.stalled for k in self.links):
                    link.stalled = True
                    link.stalled_at = loop.time()
                await self._hold(link)
                started = loop.time()
                client.write(data)
                await client.drain()
                link.received += len(data)
                if self.rate:
                    await asyncio.sleep(max(0.0, len(data) / self.rate - (loop.time() - started)))

    async def _hold(self, link: Link) -> None:
        if link.stalled:
            await asyncio.Event().wait()  # forever: only closing the proxy ends it
