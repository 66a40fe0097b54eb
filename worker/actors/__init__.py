"""Actors, one module per domain; :func:`register_actors` declares them all on a broker.

The task types are the explicit list of :mod:`shared.task_types`; declaring an actor for a type
the list lacks (or none for a type it has) stops the worker at start.
"""

from __future__ import annotations

from dramatiq import Broker

from shared.settings import Settings
from shared.task_types import INTERNAL_TASK_TYPES, TASK_TYPES
from worker.actors import builtin, coaching, deploy


def register_actors(broker: Broker, settings: Settings) -> None:
    """Declare every actor of every domain on ``broker``, one for each type of the allow-list."""
    builtin.register(broker, settings)
    coaching.register(broker, settings)
    deploy.register(broker, settings)
    expected = {t.actor_name for t in (*TASK_TYPES, *INTERNAL_TASK_TYPES)}
    declared = set(broker.get_declared_actors())
    if not expected <= declared:
        raise RuntimeError(f"no actor for task types {sorted(expected - declared)}")
