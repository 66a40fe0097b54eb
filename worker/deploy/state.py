"""Deploy records from the worker's side (sync Redis): read, update, claim, lock, call markers.

Exactly-once provider calls per step: before calling, the worker writes ``pending:<ms>`` to the
step's call marker with SET NX, and ``done:<provider id>`` after. A redelivered step that finds
``done:`` polls that deployment instead of starting another. Only one thread works on a deploy
at a time (a Redis lock kept alive by a watchdog thread, expiring ``DEPLOY_LOCK_TTL`` after its
holder dies), so a ``pending:`` marker seen by the lock holder means an earlier holder died
mid-call: the provider may have accepted that call. Before calling again the worker asks the
provider (``find``, given the marker's time) for a deployment that call started, and adopts it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import redis

from shared.deploy.models import decode_deploy, encode_fields
from shared.deploy.store import create_args
from shared.settings import Settings
from shared.store import lua_source


def now_ms() -> int:
    """Milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


class DeployState:
    """Sync access to deploy records and their coordination keys."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.keys = settings.keys
        self._create = client.register_script(lua_source("shared.deploy", "deploy_create"))
        self._claim = client.register_script(lua_source("shared.deploy", "deploy_claim"))
        self._release = client.register_script(lua_source("shared.deploy", "deploy_release"))

    def get(self, deploy_id: str) -> dict[str, Any] | None:
        """The raw-typed record (ms timestamps), or None."""
        raw = self.client.hgetall(self.keys.deploy(deploy_id))
        return decode_deploy(raw, iso_times=False) if raw else None

    def create(self, record: dict[str, Any]) -> str:
        """Record a deploy (queued behind an active one if needed); returns the outcome."""
        keys, args = create_args(self.keys, record, exclusive=False)
        outcome, _ = self._create(keys=keys, args=args)
        return str(outcome.decode())

    def update(self, deploy_id: str, **fields: Any) -> None:
        """Set fields (and ``updated_at``)."""
        self.client.hset(
            self.keys.deploy(deploy_id), mapping=encode_fields({**fields, "updated_at": now_ms()})
        )

    def claim(self, service: str, deploy_id: str) -> str:
        """Make this deploy the service's active one unless another is; returns the active id."""
        active = self._claim(keys=[self.keys.deploy_active(service)], args=[deploy_id, self.keys.deploy("")])
        return str(active.decode())

    def release(self, service: str, deploy_id: str) -> None:
        """Free the service if this deploy holds it."""
        self._release(keys=[self.keys.deploy_active(service)], args=[deploy_id])

    def stable(self, service: str) -> dict[str, Any] | None:
        """The service's stable version ``{version, deploy_id, provider_deploy_id, at}``, or None."""
        raw = self.client.hgetall(self.keys.deploy_stable(service))
        return {k.decode(): v.decode() for k, v in raw.items()} if raw else None

    def set_stable(self, service: str, stable: dict[str, Any] | None) -> None:
        """Replace the stable pointer (None deletes it)."""
        key = self.keys.deploy_stable(service)
        with self.client.pipeline() as pipe:
            pipe.delete(key)
            if stable:
                pipe.hset(key, mapping={k: str(v) for k, v in stable.items() if v is not None})
            pipe.execute()

    def call_once(
        self,
        deploy_id: str,
        step: int | str,
        call: Callable[[], str],
        find: Callable[[int], str | None] | None = None,
    ) -> str:
        """The provider id of this step's call, calling the provider only if no call completed.

        When an earlier holder died mid-call (a ``pending:<ms>`` marker), ``find(ms)`` looks for
        the deployment that call may have started at the provider; one it returns is adopted
        (recorded as done) instead of calling again. A lookup that fails raises, the marker stays
        pending, and the step is retried like any transient provider error.
        """
        key = self.keys.deploy_call(deploy_id, step)
        if not self.client.set(key, f"pending:{now_ms()}", nx=True):
            marker = self.client.get(key).decode()
            if marker.startswith("done:"):
                return str(marker[5:])
            # an earlier holder died mid-call: did the provider accept it?
            since = int(marker.removeprefix("pending:") or 0)
            adopted = find(since) if find is not None else None
            if adopted:
                self.client.set(key, f"done:{adopted}")
                return adopted
            self.client.set(key, f"pending:{now_ms()}")
        provider_id = call()
        self.client.set(key, f"done:{provider_id}")
        return provider_id

    def call_done(self, deploy_id: str, step: int | str) -> str | None:
        """The provider id recorded for a step's completed call, or None."""
        marker = self.client.get(self.keys.deploy_call(deploy_id, step))
        text = marker.decode() if marker else ""
        return text[5:] if text.startswith("done:") else None

    @contextmanager
    def locked(self, deploy_id: str, wait: float = 2.0) -> Iterator[bool]:
        """Hold the deploy's lock (yields False when another thread holds it after ``wait``)."""
        ttl = self.settings.deploy_lock_ttl
        key = self.keys.deploy_lock(deploy_id)
        lock = self.client.lock(key, timeout=ttl, blocking_timeout=wait, thread_local=False)
        if not lock.acquire():
            yield False
            return
        stop = threading.Event()

        def keep_alive() -> None:
            while not stop.wait(ttl / 3):
                try:
                    lock.reacquire()
                except redis.RedisError:
                    return

        watchdog = threading.Thread(target=keep_alive, name=f"deploy-lock-{deploy_id[:8]}", daemon=True)
        watchdog.start()
        try:
            yield True
        finally:
            stop.set()
            watchdog.join()
            with suppress(redis.RedisError):
                lock.release()
