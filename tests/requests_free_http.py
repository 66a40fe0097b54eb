"""Tiny blocking HTTP helpers on urllib (for tests that drive real servers from sync code)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


def _call(req: urllib.request.Request) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, {}


def get(url: str, token: str | None = None) -> tuple[int, Any]:
    """GET ``url`` → (status, JSON body); status 0 when nothing answers."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return _call(urllib.request.Request(url, headers=headers))


def post(url: str, body: Any, token: str | None = None) -> tuple[int, Any]:
    """POST JSON ``body`` to ``url`` → (status, JSON body)."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return _call(urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST"))
