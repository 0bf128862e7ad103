"""Kubernetes Events: what `kubectl describe` shows a person about each decision."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from migweaver.core.resources.api import metadata_of
from migweaver.k8s.client import ApiError, Conflict, CoreObjects, JsonDict, now_rfc3339
from migweaver.logs import get_logger

EventType = Literal["Normal", "Warning"]

log = get_logger(__name__)

# Cluster-scoped objects (MigLayout, NodeConfig, Node) get their Events in `default`,
# which is where kubectl looks for them.
CLUSTER_EVENT_NAMESPACE = "default"
MAX_MESSAGE = 1024


def event_body(
    involved: Mapping[str, Any],
    reason: str,
    message: str,
    event_type: EventType,
    component: str,
    now: str,
    count: int = 1,
) -> JsonDict:
    """A core/v1 Event about `involved` (any API object as a dict)."""
    meta = involved.get("metadata") or {}
    namespace = meta.get("namespace") or CLUSTER_EVENT_NAMESPACE
    name = str(meta.get("name", "unknown"))
    # A stable-per-message suffix keeps names unique without a random source.
    digest = hashlib.sha256(f"{name}/{reason}/{message}/{now}".encode()).hexdigest()[:10]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{name[:200]}.{digest}", "namespace": namespace},
        "involvedObject": {
            "apiVersion": involved.get("apiVersion", "v1"),
            "kind": involved.get("kind", ""),
            "name": name,
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "reason": reason,
        "message": message[:MAX_MESSAGE],
        "type": event_type,
        "source": {"component": component},
        "reportingComponent": component,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": count,
    }


class EventRecorder:
    """Posts Events; a failure to post is logged, never raised (an Event is best effort)."""

    def __init__(self, core: CoreObjects, component: str) -> None:
        self._core = core
        self.component = component

    async def record(
        self,
        involved: Mapping[str, Any],
        reason: str,
        message: str,
        event_type: EventType = "Normal",
        count: int = 1,
    ) -> None:
        body = event_body(
            involved, reason, message, event_type, self.component, now_rfc3339(), count
        )
        try:
            await self._core.create_event(body["metadata"]["namespace"], body)
        except Conflict:
            # Same object, reason, message and second: the Event already says it.
            log.debug("event already recorded", reason=reason, object=_described(involved))
        except ApiError as exc:
            log.warning(
                "could not record an event",
                reason=reason,
                object=_described(involved),
                error=str(exc),
            )


def _described(obj: Mapping[str, Any]) -> str:
    """`Kind namespace/name` of an API object, for log lines."""
    meta = metadata_of(obj)
    where = f"{meta.get('namespace')}/" if meta.get("namespace") else ""
    return f"{obj.get('kind', 'object')} {where}{meta.get('name', '?')}"


def _reference(involved: Mapping[str, Any]) -> JsonDict:
    """What an Event needs of its object: a queued Event must not keep a whole pod or
    MigLayout (with its status) alive until it is posted."""
    meta = involved.get("metadata") or {}
    return {
        "apiVersion": involved.get("apiVersion", "v1"),
        "kind": involved.get("kind", ""),
        "metadata": {
            key: meta[key] for key in ("name", "namespace", "uid", "resourceVersion") if key in meta
        },
    }


@dataclass
class _Pending:
    involved: Mapping[str, Any]
    reason: str
    message: str
    event_type: EventType
    count: int = 1


class Recorder(Protocol):
    """What `EventQueue` posts through (`EventRecorder` fits)."""

    async def record(
        self,
        involved: Mapping[str, Any],
        reason: str,
        message: str,
        event_type: EventType = "Normal",
        count: int = 1,
    ) -> None: ...


class EventQueue:
    """Events off the critical path: `record` only queues; `run` posts them, a few at a
    time, in the background.

    A burst of 500 placements is 1,300 Events: posted one by one between the writes that
    release pods, they doubled the time to release them; posted alongside them, they
    took their share of the API server's write capacity, which bounds the burst. So they
    wait while `open` is cleared (the owner's writes are in flight), for `max_hold_s` at
    most. Queued, the same Event (object,
    reason, message) recorded again before it is posted is posted once with its `count`.
    At most `max_pending` distinct Events wait; beyond that, new ones are dropped (logged
    once per overflow) rather than growing memory without bound: an Event is best effort.
    """

    def __init__(
        self,
        recorder: Recorder,
        concurrency: int = 8,
        max_pending: int = 10_000,
        max_hold_s: float = 10.0,
    ) -> None:
        self.recorder = recorder
        self.concurrency = concurrency
        self.max_pending = max_pending
        self.max_hold_s = max_hold_s
        self._pending: dict[tuple[str, ...], _Pending] = {}
        self._queued = asyncio.Event()
        self._dropping = False
        self.open = asyncio.Event()
        """Cleared while the owner's own writes are in flight: the API server's write
        capacity goes to them first (Events wait at most `max_hold_s`)."""
        self.open.set()

    def __len__(self) -> int:
        return len(self._pending)

    async def record(
        self,
        involved: Mapping[str, Any],
        reason: str,
        message: str,
        event_type: EventType = "Normal",
    ) -> None:
        meta = involved.get("metadata") or {}
        key = (
            str(involved.get("kind", "")),
            str(meta.get("namespace", "")),
            str(meta.get("name", "")),
            str(meta.get("uid", "")),
            reason,
            message,
            event_type,
        )
        found = self._pending.get(key)
        if found is not None:
            found.count += 1
            return
        if len(self._pending) >= self.max_pending:
            if not self._dropping:
                log.warning("too many Events wait to be posted: dropping", limit=self.max_pending)
            self._dropping = True
            return
        self._pending[key] = _Pending(_reference(involved), reason, message, event_type)
        self._queued.set()

    async def flush(self) -> None:
        """Post every Event queued now (a few at a time)."""
        batch = list(self._pending.values())
        self._pending.clear()
        self._dropping = False
        limit = asyncio.Semaphore(self.concurrency)

        async def post(item: _Pending) -> None:
            async with limit:
                if not self.open.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.open.wait(), self.max_hold_s)
                await self.recorder.record(
                    item.involved, item.reason, item.message, item.event_type, item.count
                )

        await asyncio.gather(*(post(item) for item in batch))

    async def run(self) -> None:
        """Post queued Events until cancelled; what is queued then is posted first (for a
        few seconds at most)."""
        try:
            while True:
                await self._queued.wait()
                self._queued.clear()
                await self.flush()
        finally:
            if self._pending:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5.0):
                        await self.flush()
