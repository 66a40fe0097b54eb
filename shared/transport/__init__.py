"""The message transport: everything that knows the broker's wire format, behind one interface.

Opsdeck's rooms never touch the broker's own keys, scripts or private classes; they call this
package. The interfaces, named for what they do, are in :mod:`shared.transport.api`
(:class:`~shared.transport.api.QueueAdmin` for the dashboard, :class:`~shared.transport.api.BrokerUpkeep`
for the agent); :func:`queue_admin` and :func:`broker_upkeep` hand out the implementation that
matches the settings: Dramatiq's Redis broker, or (``BROKER_URL=amqp://…``) its RabbitMQ broker
(:mod:`shared.transport.rabbitmq`, :mod:`shared.transport.outbox`, :mod:`shared.transport.rabbit_admin`).
The Redis side:

- the broker's key names (queues, delay queues, dead letters, ack sets, heartbeats), for everyone
  through ``shared.keys.Keys``: :mod:`shared.transport.redis_keys`;
- enqueue a batch, for the coordinator: the message is written inside ``shared/lua/submit.lua``
  exactly as ``dramatiq.Message.encode`` writes it;
- the broker and consumer of a worker process: :mod:`shared.transport.redis_broker`;
- maintenance (redeliver a dead process's messages) and queue depths, for the agent:
  :mod:`shared.transport.maintenance`;
- queue stats, delayed messages, dead letters (list, retry) and purge, for the dashboard:
  :mod:`shared.transport.queues`;
- the Dramatiq version and private names all of this relies on: :mod:`shared.transport.contract`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # shared.keys imports shared.transport.redis_keys: nothing at import time here
    import redis

    from shared.keys import Keys
    from shared.settings import Settings
    from shared.transport.api import BrokerUpkeep, QueueAdmin


def queue_admin(settings: Settings, client: Any, keys: Keys) -> QueueAdmin:
    """The dashboard's view of the broker's queues (``client``: the app's async Redis client)."""
    if settings.rabbitmq:
        from shared.transport.rabbit_admin import RabbitQueueAdmin
        from shared.transport.urls import node_urls, spread

        return RabbitQueueAdmin(
            client,
            keys,
            settings.task_events_maxlen,
            urls=spread(node_urls(settings.broker_url or "")),
            management_url=settings.rabbitmq_management_url,
        )
    from shared.transport.queues import RedisQueueAdmin

    return RedisQueueAdmin(client, keys, settings.task_events_maxlen)


def broker_upkeep(settings: Settings, client: redis.Redis, keys: Keys, caller: str) -> BrokerUpkeep:
    """The agent's broker maintenance and depth reads, made under the broker id ``caller``."""
    if settings.rabbitmq:
        from shared.transport.rabbit_admin import RabbitUpkeep
        from shared.transport.urls import node_urls, spread

        return RabbitUpkeep(
            spread(node_urls(settings.broker_url or "")), management_url=settings.rabbitmq_management_url
        )
    from shared.transport.maintenance import RedisUpkeep

    return RedisUpkeep(client, keys.broker, caller, settings.broker_heartbeat_timeout)
