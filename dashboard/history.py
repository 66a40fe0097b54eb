"""``GET /api/metrics/history?range=15m|1h|24h|7d[&type=]``: attempts, task outcomes, error rates
and latency percentiles over time, from the per-minute rollups the workers write (kept 8 days, so
history survives restarts); :mod:`dashboard.rollups` makes the points."""

from __future__ import annotations

import time
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, field_validator

from dashboard import rollups
from dashboard.appkeys import KEYS, REDIS
from shared.task_types import task_types
from shared.web import json_response, parse_query

Range = Literal["15m", "1h", "24h", "7d"]
#: Minutes covered and minutes per point of each range (at most 168 points).
RANGES: dict[str, tuple[int, int]] = {"15m": (15, 1), "1h": (60, 1), "24h": (1440, 10), "7d": (10080, 60)}


class HistoryQuery(BaseModel):
    """Query of ``GET /api/metrics/history``."""

    model_config = ConfigDict(extra="forbid")
    range: Range = "1h"
    type: str | None = None

    @field_validator("type")
    @classmethod
    def known_type(cls, value: str | None) -> str | None:
        """Only a task type of the allow-list (or none: every type)."""
        if value is not None and value not in task_types():
            raise ValueError(f"unknown task type (one of {', '.join(sorted(task_types()))})")
        return value


async def read_history(
    client: Any, keys: Any, range_name: str, now: float | None = None, task_type: str | None = None
) -> dict[str, Any]:
    """Points (:func:`dashboard.rollups.point`) and the range's totals (one pipelined round trip)."""
    minutes, step = RANGES[range_name]
    last = int((now or time.time()) // 60)
    first = last - minutes + 1
    fields = rollups.rollup_fields(task_type)
    async with client.pipeline(transaction=False) as pipe:
        for m in range(first, last + 1):
            pipe.hmget(keys.stats_minute(m), fields)
        replies = await pipe.execute()
    return {
        "range": range_name,
        "type": task_type,
        "step_seconds": step * 60,
        "points": rollups.points(first, replies, step, task_type),
        "totals": rollups.totals(first, replies, task_type),
    }


async def history(request: web.Request) -> web.Response:
    """``GET /api/metrics/history?range=&type=``."""
    query = parse_query(request, HistoryQuery)
    client, keys = request.app[REDIS], request.app[KEYS]
    return json_response(await read_history(client, keys, query.range, task_type=query.type))
