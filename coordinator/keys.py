"""Typed keys for what the coordinator app holds."""

from __future__ import annotations

import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CollectorRegistry

from shared.auth import Verifier
from shared.metrics import HttpMetrics, RateLimitMetrics
from shared.ratelimit import RateLimiter
from shared.settings import Settings
from shared.taskstore import TaskStore

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", aioredis.Redis)
STORE = web.AppKey("store", TaskStore)
VERIFIER = web.AppKey("verifier", Verifier)
REGISTRY = web.AppKey("registry", CollectorRegistry)
HTTP_METRICS = web.AppKey("http_metrics", HttpMetrics)
LIMITER = web.AppKey("rate_limiter", RateLimiter)
RATE_METRICS = web.AppKey("rate_metrics", RateLimitMetrics)
