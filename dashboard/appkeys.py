"""Typed application keys of the dashboard app (``app[SETTINGS]``, ``request[PRINCIPAL]``, ...)."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

import redis.asyncio as aioredis
from aiohttp import web

from shared.keys import Keys
from shared.settings import Settings
from shared.taskstore import TaskStore
from shared.transport.api import QueueAdmin

if TYPE_CHECKING:
    from dashboard.auth import Sessions, User
    from dashboard.stream import Poller

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", aioredis.Redis)
KEYS = web.AppKey("keys", Keys)
STORE = web.AppKey("store", TaskStore)
#: The broker's queues as the operator sees them (shared.transport.queue_admin).
QUEUES: web.AppKey[QueueAdmin] = web.AppKey("queues")
SESSIONS: web.AppKey[Sessions] = web.AppKey("sessions")
POLLER: web.AppKey[Poller] = web.AppKey("poller")
SOCKETS = web.AppKey("sockets", weakref.WeakSet[web.WebSocketResponse])
#: Set on the request by the guard middleware: who is calling.
USER: web.RequestKey[User] = web.RequestKey("user")
