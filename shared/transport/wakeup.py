"""Wake-ups for idle consumers: block on "a message arrived" instead of polling every queue.

Dramatiq's Redis consumer polls its queue every ``WORKER_IDLE_WAIT_MS`` when it is empty (the coach
queues every ``COACH_IDLE_WAIT_MS``): twelve queues and their delay queues per process, so an idle
process made ~150 fetches a second, ~10 % of a core, and Redis ~9 % of one serving them.

Whatever enqueues a message also publishes the queue's name on one pub/sub channel
(``Keys.queue_wakeups``): the coordinator's submit script once per queue per batch, the workers'
own enqueues (retries, deferred deliveries, deploy steps) through ``OpsdeckBroker.do_enqueue``.
One subscriber thread per process sets the queue's event; an idle consumer waits on it, for at most
``WORKER_IDLE_MAX_WAIT_MS``, before it fetches again. So the first message is fetched as soon as it
is published, and an idle process makes about one fetch per queue per ``WORKER_IDLE_MAX_WAIT_MS``.

Nothing is lost if a wake-up is: messages stay in their queue, the consumer's next poll (at most
``WORKER_IDLE_MAX_WAIT_MS`` later) finds them. Messages that come back without a publish (Dramatiq's
maintenance requeueing a dead process's messages) wait for that poll. While the subscription is
down, consumers poll as Dramatiq's do (:attr:`Wakeups.live` is False).

A paused consumer thread only notices its pause when a fetch comes back empty; one waiting a
minute for a wake-up would notice it only when the next message wakes it, and would run that
message. So pausing *holds* the queue here (:meth:`Wakeups.hold`): its waiting consumer is woken
at once and, while held, does not fetch (see ``shared.transport.redis_broker.pause_consumers``).
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Iterable

import redis

log = logging.getLogger(__name__)

#: Seconds between attempts to subscribe again after the subscription broke.
RESUBSCRIBE_DELAY = 0.5


class Wakeups:
    """One subscriber thread; an event per queue that idle consumers wait on."""

    def __init__(self, client: redis.Redis, channel: str, *, max_wait: float) -> None:
        self.client = client
        self.channel = channel
        self.max_wait = max_wait
        #: True while the subscription is up (consumers may wait; else they poll).
        self.live = False
        self._events: defaultdict[str, threading.Event] = defaultdict(threading.Event)
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Subscribe in a daemon thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="queue-wakeups", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop listening and release every waiting consumer."""
        self._stop.set()
        self.live = False
        self.poke_all()

    def event(self, queue: str) -> threading.Event:
        """The event of ``queue`` (made on first use)."""
        with self._lock:
            return self._events[queue]

    def wait(self, queue: str) -> bool:
        """Block until ``queue`` got a message (True) or ``max_wait`` passed (False)."""
        event = self.event(queue)
        woken = event.wait(self.max_wait)
        event.clear()
        return woken

    def hold(self, queues: Iterable[str]) -> None:
        """Mark ``queues`` paused and wake their waiting consumers (call once their threads are
        paused: an empty answer is what makes a paused consumer thread stop)."""
        queues = list(queues)
        with self._lock:
            self._held.update(queues)
            events = [self._events[queue] for queue in queues]
        for event in events:
            event.set()

    def release(self, queues: Iterable[str]) -> None:
        """Unmark ``queues`` (call before their consumer threads resume)."""
        with self._lock:
            self._held.difference_update(queues)

    def held(self, queue: str) -> bool:
        """True while ``queue`` is paused here: its consumer must not fetch."""
        return queue in self._held

    def poke_all(self) -> None:
        """Wake every waiting consumer (the subscription broke, or the worker stops)."""
        with self._lock:
            events = list(self._events.values())
        for event in events:
            event.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.channel)
                pubsub.get_message(timeout=1.0)  # the subscribe confirmation
                self.live = True
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None and message["type"] == "message":
                        self.event(message["data"].decode()).set()
            except redis.RedisError as exc:
                if self.live:
                    log.warning("queue wake-ups unavailable (%s): polling until back", type(exc).__name__)
                self.live = False
                self.poke_all()  # waiting consumers go back to polling now
                self._stop.wait(RESUBSCRIBE_DELAY)
            finally:
                self.live = False
                pubsub.close()
