"""``GET /api/metrics/history?range=15m|1h|24h|7d``: throughput, errors and latency over time,
from the per-minute rollups the workers write (kept 8 days, so history survives restarts)."""

from __future__ import annotations

import time
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from dashboard.appkeys import KEYS, REDIS
from dashboard.snapshot import ROLLUP_FIELDS
from shared.web import json_response, parse_query

Range = Literal["15m", "1h", "24h", "7d"]
#: Minutes covered and minutes per point of each range (at most 168 points).
RANGES: dict[str, tuple[int, int]] = {"15m": (15, 1), "1h": (60, 1), "24h": (1440, 10), "7d": (10080, 60)}


class HistoryQuery(BaseModel):
    """Query of ``GET /api/metrics/history``."""

    model_config = ConfigDict(extra="forbid")
    range: Range = "1h"


async def read_history(client: Any, keys: Any, range_name: str, now: float | None = None) -> dict[str, Any]:
    """Points ``{t, processed, failed, retried, error_rate, avg_ms}`` (one pipelined round trip)."""
    minutes, step = RANGES[range_name]
    last = int((now or time.time()) // 60)
    first = last - minutes + 1
    async with client.pipeline(transaction=False) as pipe:
        for m in range(first, last + 1):
            pipe.hmget(keys.stats_minute(m), ROLLUP_FIELDS)
        replies = await pipe.execute()
    points = []
    for i in range(0, len(replies), step):
        sums = [0.0] * len(ROLLUP_FIELDS)
        for raw in replies[i : i + step]:
            for j, v in enumerate(raw):
                sums[j] += float(v or 0)
        processed, failed, retried, dur_sum, dur_count = sums
        points.append(
            {
                "t": (first + i) * 60,
                "processed": int(processed),
                "failed": int(failed),
                "retried": int(retried),
                "error_rate": round(failed / processed, 4) if processed else 0.0,
                "avg_ms": round(dur_sum / dur_count, 1) if dur_count else None,
            }
        )
    totals = {k: sum(int(p[k] or 0) for p in points) for k in ("processed", "failed", "retried")}
    return {"range": range_name, "step_seconds": step * 60, "points": points, "totals": totals}


async def history(request: web.Request) -> web.Response:
    """``GET /api/metrics/history?range=``."""
    query = parse_query(request, HistoryQuery)
    return json_response(await read_history(request.app[REDIS], request.app[KEYS], query.range))
