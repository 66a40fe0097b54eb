"""Run a Lua script on a synchronous client without redis-py's per-command machinery.

``Script.__call__`` goes through argument filtering, retry wrappers and response callbacks —
hundreds of microseconds of Python per call, twice per task in a worker. This sends one
hiredis-packed ``EVALSHA`` and reads one reply; ``NOSCRIPT`` (a restarted Redis) loads the
script and tries again.

Each thread keeps one connection of the client's pool for all its scripts (:class:`_Held`),
checked out once: a checkout and release of redis-py's pool cost two ``getpid`` system calls, a
readiness poll, two lock round trips and its observability hooks — as much as the rest of the
call. The connection is still the pool's (its address, TLS, AUTH and database; the pool's
``disconnect()`` closes it); after an error it is disconnected and reconnects on its next use,
and a forked child takes new connections instead of its parent's.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import weakref
from collections.abc import Sequence
from typing import Any

import redis
from hiredis import pack_command
from redis.exceptions import NoScriptError

#: Bumped in a forked child: a connection held from before the fork is the parent's.
_generation = 0


def _forked() -> None:
    global _generation
    _generation += 1


os.register_at_fork(after_in_child=_forked)

_locals: weakref.WeakKeyDictionary[redis.ConnectionPool, threading.local] = weakref.WeakKeyDictionary()
_locals_lock = threading.Lock()


def _thread_local(pool: redis.ConnectionPool) -> threading.local:
    """The one ``threading.local`` of ``pool`` (shared by every FastScript on it)."""
    with _locals_lock:
        local = _locals.get(pool)
        if local is None:
            local = _locals[pool] = threading.local()
        return local


class _Held:
    """One thread's connection of a pool, checked out for the thread's lifetime."""

    __slots__ = ("conn", "generation")

    def __init__(self, pool: redis.ConnectionPool) -> None:
        self.conn = pool.get_connection()
        self.generation = _generation

    def __del__(self) -> None:  # the thread ended (or forked away): close its socket
        with contextlib.suppress(Exception):  # at interpreter exit there may be nothing to close with
            self.conn.disconnect()


class FastScript:
    """A callable Lua script bound to a sync client: ``script(keys=[...], args=[...])``."""

    def __init__(self, client: redis.Redis, source: str) -> None:
        self.client = client
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        self._local = _thread_local(client.connection_pool)

    def __call__(self, *, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run the script; raises what Redis answers (ResponseError) or connection errors."""
        packed = pack_command(("EVALSHA", self.sha, len(keys), *keys, *args))
        try:
            return self._send(packed)
        except NoScriptError:
            self.client.script_load(self.source)
            return self._send(packed)

    def _send(self, packed: bytes) -> Any:
        held: _Held | None = getattr(self._local, "held", None)
        if held is None or held.generation != _generation:
            held = self._local.held = _Held(self.client.connection_pool)
        conn = held.conn
        try:
            conn.send_packed_command([packed], check_health=False)
            return conn.read_response()
        except redis.ResponseError:
            raise  # an error reply: the connection is still in step
        except BaseException:
            conn.disconnect()  # out of step or broken: reconnects on its next use
            raise
