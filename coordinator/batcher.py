"""Coalesce concurrent Lua script calls into pipelined round trips.

Each request awaits its own result, but while one pipeline is in flight the calls of other
requests queue up and go out together in the next one, so under load one round trip
carries many enqueues and when idle a call goes out at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from shared.store import script_sha, script_source

Call = tuple[str, list[str], list[Any], "asyncio.Future[Any]"]

#: Most calls sent in one pipeline.
MAX_BATCH = 512


class ScriptBatcher:
    """Runs ``EVALSHA`` calls for named scripts of ``shared/lua`` in shared pipelines."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client
        self._pending: list[Call] = []
        self._flusher: asyncio.Task[None] | None = None

    async def call(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """Run script ``name`` with ``keys`` and ``args``; returns its reply."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((name, keys, args, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            live = [c for c in batch if not c[3].done()]
            if not live:
                continue
            try:
                results = await self._run(live)
            except Exception as exc:  # connection refused, timeout: every caller gets the error
                for call in live:
                    if not call[3].done():
                        call[3].set_exception(exc)
                continue
            for call, result in zip(live, results, strict=True):
                if call[3].done():
                    continue
                if isinstance(result, Exception):
                    call[3].set_exception(result)
                else:
                    call[3].set_result(result)

    async def _run(self, calls: list[Call]) -> list[Any]:
        results = await self._execute(calls)
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:  # Redis restarted (or SCRIPT FLUSH): load and run those calls again
            for name in {calls[i][0] for i in missing}:
                await self._client.script_load(script_source(name))
            retried = await self._execute([calls[i] for i in missing])
            for i, result in zip(missing, retried, strict=True):
                results[i] = result
        return results

    async def _execute(self, calls: list[Call]) -> list[Any]:
        async with self._client.pipeline(transaction=False) as pipe:
            for name, keys, args, _ in calls:
                pipe.evalsha(script_sha(name), len(keys), *keys, *args)
            return list(await pipe.execute(raise_on_error=False))
