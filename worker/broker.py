"""Build the Dramatiq Redis broker with Opsdeck's middleware (import this before any actor)."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis
from dramatiq.middleware import AgeLimit, Callbacks, Pipelines, Retries, ShutdownNotifications, TimeLimit
from dramatiq.results import Results
from dramatiq.results.backends import StubBackend

from shared.fastscript import FastScript
from shared.keys import Keys
from shared.redis import sync_client
from shared.settings import Settings
from worker.middleware.heartbeat import BrokerHeartbeat
from worker.middleware.taskstore import TaskStore

#: Chance (per million dispatch calls) that a call also runs Dramatiq's queue maintenance;
#: the agent also runs it on a clock, so this only matters for agents that died.
MAINTENANCE_CHANCE = 10_000


class OpsdeckBroker(RedisBroker):
    """Dramatiq's Redis broker with two changes that keep its protocol (same script, same keys):

    - an ack the task store already performed (inside its final-status script, atomically with
      the status) is not sent a second time;
    - the dispatch script runs through :class:`~shared.fastscript.FastScript`, skipping
      redis-py's per-command machinery on every fetch, ack and enqueue.
    """

    def __init__(self, *, store: TaskStore, **options: Any) -> None:
        super().__init__(**options)  # type: ignore[no-untyped-call]
        self._store = store
        dispatch = (files("dramatiq.brokers") / "redis" / "dispatch.lua").read_text()
        self._fast_dispatch = FastScript(self.client, dispatch)

    def _dispatch(self, command: str) -> Any:
        """Like RedisBroker._dispatch (same arguments, same script), through FastScript."""
        script, keys = self._fast_dispatch, [self.namespace]

        def do_dispatch(queue_name: str, *args: Any) -> Any:
            return script(
                keys=keys,
                args=[
                    command, current_millis(), queue_name, self.broker_id, self.heartbeat_timeout,
                    self.dead_message_ttl, self._should_do_maintenance(command),
                    self._max_unpack_size(), *args,  # type: ignore[no-untyped-call]
                ],
            )  # fmt: skip

        return do_dispatch

    def do_ack(self, queue_name: str, message_id: str) -> Any:
        """Ack ``message_id`` unless the task store's finish script already did."""
        if self._store.take_acked(message_id):
            return None
        return self._dispatch("ack")(queue_name, message_id)


def build_broker(settings: Settings, *, worker_id: str) -> RedisBroker:
    """A RedisBroker whose first middleware is the TaskStore (see its docstring for why)."""
    keys = Keys(settings.key_prefix, settings.dramatiq_namespace)
    client = sync_client(settings, retries=1)
    store = TaskStore(client, settings, worker_id=worker_id)
    middleware = [
        store,
        AgeLimit(),
        TimeLimit(),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(max_retries=settings.task_max_retries),
        # Inert (results are not stored in it): its presence stops Dramatiq warning that an
        # actor's return value is discarded — the TaskStore keeps results in the task record.
        Results(backend=StubBackend()),  # type: ignore[no-untyped-call]
        BrokerHeartbeat(keys, interval=max(0.5, settings.broker_heartbeat_timeout / 5)),
    ]
    return OpsdeckBroker(
        store=store,
        client=client,
        namespace=settings.dramatiq_namespace,
        middleware=middleware,
        heartbeat_timeout=int(settings.broker_heartbeat_timeout * 1000),
        maintenance_chance=MAINTENANCE_CHANCE,
    )
