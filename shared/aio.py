"""asyncio helpers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task[Any]], attempts: int = 50, interval: float = 0.1
) -> bool:
    """Cancel ``tasks`` and wait until they are done, cancelling again while any is left (at most
    ``attempts`` times, ``interval`` seconds apart); True when all are done.

    Python 3.11's ``asyncio.wait_for`` (used inside redis-py's connection code) drops a
    cancellation that arrives just as its inner call completes: a loop that was cancelled once
    then goes on running — until its deadline, or for ever — and whoever awaits it hangs."""
    pending = {task for task in tasks if not task.done()}
    for _ in range(attempts):
        if not pending:
            return True
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=interval)
    return not pending
