"""A TCP proxy for fault injection between Opsdeck processes and Redis (fault tests, chaos load).

Modes, switchable while it runs: ``pass`` (forward), ``latency`` (delay every chunk by
``delay`` seconds), ``blackhole`` (accept and read, forward nothing: a silent network),
``reset`` (close every connection now and refuse new ones until the mode changes).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from shared.devtools.embedded_redis import free_port


class FaultProxy:
    """Runs in a thread of its own; ``url`` points clients at it."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.mode = "pass"
        self.delay = 0.0
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(5)

    @property
    def url(self) -> str:
        """redis:// URL through the proxy."""
        return f"redis://127.0.0.1:{self.port}/0"

    def set(self, mode: str, delay: float = 0.0) -> None:
        """Switch mode; ``reset`` also drops every open connection."""
        self.mode, self.delay = mode, delay
        if mode == "reset":
            self._loop.call_soon_threadsafe(self._drop_all)

    def close(self) -> None:
        """Stop the proxy thread."""
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    # -- internals ---------------------------------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            self._drop_all()
            # the connections' handlers end, then the loop closes (and with it its self-pipe)
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.close()

    def _drop_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "reset":
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if self.mode == "latency":
                    await asyncio.sleep(self.delay)
                while self.mode == "blackhole":  # noqa: ASYNC110 - the mode is set from another thread
                    await asyncio.sleep(0.05)
                if self.mode == "reset":
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.transport.abort()
