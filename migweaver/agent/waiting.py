"""The two ways the agent's loops wait while watching for `stop` (pod watch, layout watch,
start-up order, node capacity)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any


async def until_stopped(
    work: Coroutine[Any, Any, object], stop: asyncio.Event, timeout_s: float | None = None
) -> bool:
    """Run `work` until it ends, `stop` is set or `timeout_s` passes, whichever comes first.

    True when `work` ended; its exception propagates. Whatever still runs is cancelled and
    awaited, also when the caller is cancelled: no task outlives the call.
    """
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in (task, stopper):
            waiter.cancel()  # no-op on a task that is done
        await asyncio.gather(task, stopper, return_exceptions=True)
    if task.cancelled():
        return False
    task.result()
    return True


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Wait `seconds`, or until `stop` is set if that comes first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
