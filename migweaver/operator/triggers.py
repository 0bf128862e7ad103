"""How kopf's handlers reach the work loop across threads.

Kopf runs in a thread of its own with its own event loop (`main.KopfThread`): when it
stops, kopf cancels every task created on its loop after it started, which must never be
the work loop's. Handlers therefore only *notify* the work loop, through `Triggers`, which
schedules the call on the work loop's event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Protocol


class Notified(Protocol):
    def pod_arrived(self) -> None: ...
    def capacity_changed(self) -> None: ...
    def observed(self, kind: str, event_type: str | None, obj: Mapping[str, Any]) -> None: ...


class Triggers:
    """`pod_arrived` / `capacity_changed` of the work loop, callable from any thread."""

    def __init__(self, target: Notified, loop: asyncio.AbstractEventLoop) -> None:
        self._target = target
        self._loop = loop

    def pod_arrived(self) -> None:
        self._loop.call_soon_threadsafe(self._target.pod_arrived)

    def capacity_changed(self) -> None:
        self._loop.call_soon_threadsafe(self._target.capacity_changed)

    def observed(self, kind: str, event_type: str | None, obj: Mapping[str, Any]) -> None:
        """A watch event's object, for the work loop's store of `kind` (scheduled before
        any trigger the same handler calls next, so a round sees it)."""
        self._loop.call_soon_threadsafe(self._target.observed, kind, event_type, obj)
