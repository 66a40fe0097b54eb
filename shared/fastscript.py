"""Run a Lua script on a synchronous client without redis-py's per-command machinery.

``Script.__call__`` goes through argument filtering, retry wrappers and response callbacks —
hundreds of microseconds of Python per call, twice per task in a worker. This sends one
hiredis-packed ``EVALSHA`` on a pooled connection and reads one reply; ``NOSCRIPT`` (a restarted
Redis) loads the script and tries again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import redis
from hiredis import pack_command
from redis.exceptions import NoScriptError


class FastScript:
    """A callable Lua script bound to a sync client: ``script(keys=[...], args=[...])``."""

    def __init__(self, client: redis.Redis, source: str) -> None:
        self.client = client
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    def __call__(self, *, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run the script; raises what Redis answers (ResponseError) or connection errors."""
        packed = pack_command(("EVALSHA", self.sha, len(keys), *keys, *args))
        try:
            return self._send(packed)
        except NoScriptError:
            self.client.script_load(self.source)
            return self._send(packed)

    def _send(self, packed: bytes) -> Any:
        pool = self.client.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_packed_command([packed], check_health=False)
            return conn.read_response()
        except redis.ResponseError:
            raise  # an error reply: the connection is still in step
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)
