"""The key names of Dramatiq's Redis broker (``dramatiq/brokers/redis/dispatch.lua``), in one place.

Dramatiq builds them inside its dispatch script from a namespace and a queue name; Opsdeck's
scripts and readers build the same names from here (``shared.keys.Keys`` exposes them), and the
contract test (:mod:`shared.transport.contract`) checks they still match the installed script.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Suffix of a queue's delay queue (messages with an ETA: retries, deferred deliveries).
DELAY_SUFFIX = ".DQ"
#: Suffix of a queue's dead-letter set.
DEAD_SUFFIX = ".XQ"
#: Suffix of the hash holding a list's (or set's) encoded messages.
MESSAGES_SUFFIX = ".msgs"


def canonical_queue(queue_name: str) -> str:
    """The queue a delay queue belongs to (``default.p2.DQ`` → ``default.p2``)."""
    return queue_name.removesuffix(DELAY_SUFFIX)


def delay_queue_name(queue_name: str) -> str:
    """The delay queue of a queue (``default.p2`` → ``default.p2.DQ``)."""
    return f"{canonical_queue(queue_name)}{DELAY_SUFFIX}"


@dataclass(frozen=True, slots=True)
class BrokerKeys:
    """Dramatiq's key names under one namespace."""

    namespace: str = "dramatiq"

    def queue(self, queue_name: str) -> str:
        """List: ids of ready messages of a Dramatiq queue."""
        return f"{self.namespace}:{queue_name}"

    def queue_messages(self, queue_name: str) -> str:
        """Hash: message id → encoded message of a Dramatiq queue."""
        return f"{self.namespace}:{queue_name}{MESSAGES_SUFFIX}"

    def delay_queue(self, queue_name: str) -> str:
        """List: ids of delayed messages (retries with backoff) of a Dramatiq queue."""
        return f"{self.namespace}:{queue_name}{DELAY_SUFFIX}"

    def delay_queue_messages(self, queue_name: str) -> str:
        """Hash: message id → encoded message of a Dramatiq queue's delayed messages."""
        return f"{self.namespace}:{queue_name}{DELAY_SUFFIX}{MESSAGES_SUFFIX}"

    def dead_letters(self, queue_name: str) -> str:
        """Sorted set: dead-lettered message ids of a Dramatiq queue."""
        return f"{self.namespace}:{canonical_queue(queue_name)}{DEAD_SUFFIX}"

    def dead_letter_messages(self, queue_name: str) -> str:
        """Hash: message id → encoded message of a Dramatiq queue's dead letters."""
        return f"{self.dead_letters(queue_name)}{MESSAGES_SUFFIX}"

    def acks(self, broker_id: str, queue_name: str) -> str:
        """Set: ids of messages a Dramatiq broker (process) fetched from a queue and not acked yet."""
        return f"{self.namespace}:__acks__.{broker_id}.{queue_name}"

    @property
    def heartbeats(self) -> str:
        """Sorted set: Dramatiq broker ids scored by their last dispatch call (ms)."""
        return f"{self.namespace}:__heartbeats__"
