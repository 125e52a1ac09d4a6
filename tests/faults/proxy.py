"""A TCP proxy in front of a department endpoint that can go down or turn slow.

Down: the listening socket closes and open connections are cut, so callers get
connection refused / reset, as from a crashed host. Slow: each response waits a
chosen delay before its first byte travels back, as over a congested link; the
endpoint behind already has the request, so a caller that gives up meanwhile
sends it again with the same webhook-id.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from deploy.local.procs import free_port

CHUNK = 64 * 1024


@dataclass
class FlakyProxy:
    target_port: int
    port: int = field(default_factory=free_port)
    response_delay: Callable[[], float] | None = None
    connections: int = 0  # accepted since start, for the test's own checks
    _server: asyncio.Server | None = None
    _open: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def up(self) -> None:
        """Listen (again) on the same port."""
        if self._server is None:
            self._server = await asyncio.start_server(
                self._accept, "127.0.0.1", self.port, reuse_address=True
            )

    async def down(self) -> None:
        """Refuse new connections and cut the open ones."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._open):
            task.cancel()
        if self._open:
            await asyncio.wait(list(self._open), timeout=5)
        if server is not None:
            await server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._open.add(task)
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port
            )
            request_seen = asyncio.Event()
            await asyncio.gather(
                self._pipe(reader, upstream_writer, on_data=request_seen.set),
                self._pipe(upstream_reader, writer, delay_after=request_seen),
            )
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._open.discard(task)
            for w in (writer, upstream_writer):
                if w is not None:
                    w.transport.abort()

    async def _pipe(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        *,
        on_data: Callable[[], None] | None = None,
        delay_after: asyncio.Event | None = None,
    ) -> None:
        while data := await source.read(CHUNK):
            if on_data is not None:
                on_data()
            if delay_after is not None and delay_after.is_set() and self.response_delay:
                delay_after.clear()  # once per response: its first bytes wait
                await asyncio.sleep(self.response_delay())
            sink.write(data)
            await sink.drain()
        with contextlib.suppress(OSError):
            sink.write_eof()
