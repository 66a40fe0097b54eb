"""Coalesce concurrent task submissions into one Lua call per round trip.

Each request awaits its own outcome, but while one call is in flight the submissions of other
requests queue up and go out together in the next one (``shared/lua/submit.lua`` takes a
batch). Idle, a submission goes out at once; loaded, one round trip, one packed command and
one reply carry up to MAX_BATCH submissions. Commands are packed with hiredis (about ten times
faster than redis-py's pure-Python packer, and this is the coordinator's hot path).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from hiredis import pack_command
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

from shared.store import script_sha, script_source

#: Most submissions sent in one call.
MAX_BATCH = 256

Pending = tuple[Sequence[Any], "asyncio.Future[tuple[bool, str]]"]


class SubmitBatcher:
    """Sends task submissions to ``submit.lua`` in batches; see the module docstring."""

    def __init__(self, client: aioredis.Redis, deadline: float, header: Sequence[Any]) -> None:
        self._client = client
        self._deadline = deadline
        self._header = list(header)
        self._pending: list[Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def submit(self, task_args: Sequence[Any]) -> tuple[bool, str]:
        """Submit one task's argument group; returns (created, task id or first task's id)."""
        loop = self._loop
        if loop is None:  # asyncio.get_running_loop() makes a getpid system call: once is enough
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[bool, str]] = loop.create_future()
        self._pending.append((task_args, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            live = [p for p in batch if not p[1].done()]
            if not live:
                continue
            try:
                async with asyncio.timeout(self._deadline):
                    reply = await self._call(live)
            except Exception as exc:  # refused, timed out: this batch and all waiting get the error,
                live += self._pending  # so an outage answers everyone within one deadline
                self._pending = []
                for _, future in live:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for n, (_, future) in enumerate(live):
                if not future.done():
                    future.set_result((bool(reply[2 * n]), reply[2 * n + 1].decode()))

    async def _call(self, batch: list[Pending]) -> list[Any]:
        command: list[Any] = ["EVALSHA", script_sha("submit"), 0, *self._header]
        for task_args, _ in batch:
            command += task_args
        try:
            return await self._send(command)
        except NoScriptError:  # Redis restarted (or SCRIPT FLUSH): load it and send again
            await self._client.script_load(script_source("submit"))
            return await self._send(command)
        except (ConnectionError, RedisConnectionError):
            # A pooled connection that died under us (Redis restarted, a proxy reset it). The
            # script skips tasks it already recorded, so sending the batch again is safe.
            return await self._send(command)

    async def _send(self, command: list[Any]) -> list[Any]:
        pool = self._client.connection_pool
        conn = await pool.get_connection()
        try:
            await conn.send_packed_command(pack_command(tuple(command)), check_health=False)
            reply = await conn.read_response()
        except NoScriptError:
            raise  # an error reply: the connection is still in step
        except BaseException:
            await conn.disconnect()
            raise
        finally:
            await pool.release(conn)
        if isinstance(reply, Exception):  # pragma: no cover - read_response raises error replies
            raise reply
        return list(reply)
