"""Actors, one module per domain; :func:`register_actors` declares them all on a broker."""

from __future__ import annotations

from dramatiq import Broker

from shared.settings import Settings
from worker.actors import builtin, coaching, deploy


def register_actors(broker: Broker, settings: Settings) -> None:
    """Declare every actor of every domain on ``broker``."""
    builtin.register(broker, settings)
    coaching.register(broker, settings)
    deploy.register(broker, settings)
