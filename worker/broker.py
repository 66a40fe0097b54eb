"""Build the worker's Dramatiq broker with Opsdeck's middleware (import this before any actor).

``BROKER_URL`` decides which: Dramatiq's Redis broker (:mod:`shared.transport.redis_broker`: its
protocol, fast paths and consumer) or its RabbitMQ broker (:mod:`shared.transport.rabbitmq`).
The middleware is the same on both.
"""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)
from dramatiq.results import ResultBackend, Results

from shared import tracing
from shared.redis import sync_client
from shared.settings import Settings
from shared.transport.rabbitmq import LongDelays, OpsdeckRabbitBroker
from shared.transport.redis_broker import (
    MAINTENANCE_CHANCE,
    MessageEncoder,
    OpsdeckBroker,
    WakeupsLifecycle,
)
from shared.transport.urls import node_urls, spread
from shared.transport.wakeup import Wakeups
from worker.middleware.heartbeat import BrokerHeartbeat
from worker.middleware.lifecycle import TaskLifecycle
from worker.middleware.tracing import TaskTracing

__all__ = ["MessageEncoder", "OpsdeckBroker", "TaskRecordBackend", "WorkerBroker", "build_broker"]

#: Either broker a worker process runs.
WorkerBroker = OpsdeckBroker | OpsdeckRabbitBroker


class TaskRecordBackend(ResultBackend):
    """A result backend that keeps nothing: results are in the task record, not here."""

    def store_result(self, message: Any, result: Any, ttl: int) -> None:
        """Nothing to do (the TaskLifecycle already wrote the result)."""

    def store_exception(self, message: Any, exception: Exception, ttl: int) -> None:
        """Nothing to do (the TaskLifecycle already wrote the error)."""


def build_broker(settings: Settings, *, worker_id: str) -> WorkerBroker:
    """The broker of ``BROKER_URL``, whose first middleware is the TaskLifecycle (see its
    docstring for why)."""
    keys = settings.keys
    dramatiq.set_encoder(MessageEncoder())  # process-wide, as Dramatiq's encoder is
    client = sync_client(settings, retries=1)
    store = TaskLifecycle(client, settings, worker_id=worker_id)
    middleware = [
        store,
        AgeLimit(),
        CurrentMessage(),
        TimeLimit(),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(max_retries=settings.task_max_retries),
        # Results live in the task record (the TaskLifecycle writes them); this backend stores
        # nothing, and its presence keeps Dramatiq from warning about every returned value.
        Results(backend=TaskRecordBackend(), store_results=True),  # type: ignore[no-untyped-call]
        BrokerHeartbeat(
            keys, interval=max(0.5, settings.broker_heartbeat_timeout / 5), on_beat=store.renew_leases
        ),
    ]
    if tracing.enabled():  # before the lifecycle: the attempt's span covers its scripts
        middleware.insert(0, TaskTracing())
    if settings.rabbitmq:
        assert settings.broker_url is not None
        long_delays = LongDelays(client, keys.outbox_scheduled, int(settings.rabbitmq_max_hold * 1000))
        return OpsdeckRabbitBroker(
            urls=spread(node_urls(settings.broker_url)),
            queue_type=settings.rabbitmq_queue_type,
            long_delays=long_delays,
            client=client,
            middleware=middleware,
        )
    broker = OpsdeckBroker(
        store=store,
        client=client,
        namespace=settings.dramatiq_namespace,
        middleware=middleware,
        heartbeat_timeout=int(settings.broker_heartbeat_timeout * 1000),
        maintenance_chance=MAINTENANCE_CHANCE,
    )
    if settings.worker_idle_wakeup:
        broker.wakeups = Wakeups(client, keys.queue_wakeups, max_wait=settings.worker_idle_max_wait_ms / 1000)
        broker.add_middleware(WakeupsLifecycle(broker.wakeups))
    return broker
