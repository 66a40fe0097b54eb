"""shared.aio.cancel_and_wait: a task that drops one cancellation (as Python 3.11's
asyncio.wait_for can) is cancelled again until it is gone."""

from __future__ import annotations

import asyncio

from shared.aio import cancel_and_wait


async def test_a_dropped_cancellation_is_repeated() -> None:
    dropped = 0
    forever = asyncio.Event()

    async def stubborn() -> None:
        nonlocal dropped
        try:
            await forever.wait()
        except asyncio.CancelledError:
            dropped += 1  # swallowed once, like wait_for racing its inner call
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
        await forever.wait()

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    assert await cancel_and_wait([task], interval=0.01)
    assert dropped == 1 and task.cancelled()


async def test_gives_up_after_its_attempts_without_hanging() -> None:
    refusals = 5

    async def stubborn_five_times() -> None:
        nonlocal refusals
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if refusals == 0:
                    raise
                refusals -= 1
                asyncio.current_task().uncancel()  # type: ignore[union-attr]

    task = asyncio.create_task(stubborn_five_times())
    await asyncio.sleep(0)
    assert not await cancel_and_wait([task], attempts=3, interval=0.01)
    assert not task.done()
    assert await cancel_and_wait([task], attempts=10, interval=0.01)
    assert task.cancelled()


async def test_nothing_to_do_for_done_tasks() -> None:
    task = asyncio.create_task(asyncio.sleep(0))
    await task
    assert await cancel_and_wait([task])
