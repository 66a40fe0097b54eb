"""Build the Dramatiq Redis broker with Opsdeck's middleware (import this before any actor)."""

from __future__ import annotations

from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AgeLimit, Callbacks, Pipelines, Retries, ShutdownNotifications, TimeLimit
from dramatiq.results import Results
from dramatiq.results.backends import StubBackend

from shared.keys import Keys
from shared.redis import sync_client
from shared.settings import Settings
from worker.middleware.heartbeat import BrokerHeartbeat
from worker.middleware.taskstore import TaskStore

#: Chance (per million dispatch calls) that a call also runs Dramatiq's queue maintenance;
#: the agent also runs it on a clock, so this only matters for agents that died.
MAINTENANCE_CHANCE = 10_000


def build_broker(settings: Settings, *, worker_id: str) -> RedisBroker:
    """A RedisBroker whose first middleware is the TaskStore (see its docstring for why)."""
    keys = Keys(settings.key_prefix, settings.dramatiq_namespace)
    client = sync_client(settings, retries=1)
    middleware = [
        TaskStore(client, settings, worker_id=worker_id),
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
    return RedisBroker(  # type: ignore[no-untyped-call]
        client=client,
        namespace=settings.dramatiq_namespace,
        middleware=middleware,
        heartbeat_timeout=int(settings.broker_heartbeat_timeout * 1000),
        maintenance_chance=MAINTENANCE_CHANCE,
    )
