"""The agent's side of the Redis transport (:class:`shared.transport.api.BrokerUpkeep`):
Dramatiq's queue maintenance on a clock, and queue depths.

Dramatiq runs maintenance (requeue the unacked messages of brokers whose heartbeat is older than
the timeout; drop expired dead letters) on a small share of its dispatch calls; a process that was
killed makes none, so on an idle queue its messages could wait many minutes. The agent therefore
calls the dispatch script itself, with a command that is no dispatch command ("noop"), so the call
does nothing but the maintenance, for every queue and its delay queue, every poll interval and
whenever one of its processes dies.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import redis

from shared.transport.contract import dispatch_script
from shared.transport.redis_keys import BrokerKeys, delay_queue_name

#: How long dead letters are kept (Dramatiq's default ``dead_message_ttl``, ms).
DEAD_MESSAGE_TTL_MS = 7 * 86_400_000
#: Most message ids one dispatch call unpacks at once (Dramatiq's ``max_unpack_size``).
MAX_UNPACK = 1000
#: Commands :func:`depth_commands` queues per queue.
DEPTH_COMMANDS = 3


class RedisUpkeep:
    """Runs Dramatiq's maintenance for every queue in one pipelined round trip; reads depths."""

    def __init__(self, client: redis.Redis, keys: BrokerKeys, caller: str, heartbeat_timeout: float) -> None:
        self.client = client
        self.keys = keys
        #: The broker id the calls are made under (it shows in Dramatiq's heartbeat set).
        self.caller = caller
        self.timeout_ms = int(heartbeat_timeout * 1000)
        self._dispatch = client.register_script(dispatch_script())

    def depths(self, queues: list[str]) -> dict[str, dict[str, int]]:
        """``{queue: {ready, delayed, dead}}`` in one pipelined round trip."""
        with self.client.pipeline(transaction=False) as pipe:
            depth_commands(pipe, self.keys, queues)
            return depths(pipe.execute(), queues)

    def maintain(self, queues: Iterable[str]) -> None:
        """Requeue the unacked messages of dead brokers on every queue (raises RedisError)."""
        now_ms = int(time.time() * 1000)
        with self.client.pipeline(transaction=False) as pipe:
            for queue in queues:
                for name in (queue, delay_queue_name(queue)):
                    # dispatch.lua's eight leading arguments; do_maintenance = 1
                    args = [
                        "noop",
                        now_ms,
                        name,
                        self.caller,
                        self.timeout_ms,
                        DEAD_MESSAGE_TTL_MS,
                        1,
                        MAX_UNPACK,
                    ]
                    self._dispatch(keys=[self.keys.namespace], args=args, client=pipe)
            pipe.execute()


def depth_commands(pipe: Any, keys: BrokerKeys, queues: Iterable[str]) -> None:
    """Queue the reads behind :func:`depths` on ``pipe`` (DEPTH_COMMANDS per queue)."""
    for queue in queues:
        pipe.llen(keys.queue(queue))
        pipe.llen(keys.delay_queue(queue))
        pipe.zcard(keys.dead_letters(queue))


def depths(replies: list[Any], queues: list[str]) -> dict[str, dict[str, int]]:
    """``{queue: {ready, delayed, dead}}`` from the replies of :func:`depth_commands`."""
    n = DEPTH_COMMANDS
    return {
        q: {"ready": replies[n * i], "delayed": replies[n * i + 1], "dead": replies[n * i + 2]}
        for i, q in enumerate(queues)
    }
