"""The message transport: everything that knows the broker's wire format, behind one interface.

Opsdeck's rooms never touch the broker's own keys, scripts or private classes; they call this
package. Today there is one implementation, Dramatiq's Redis broker; the names say what each part
does, so a second broker (RabbitMQ) can stand behind the same calls:

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
