"""Kubernetes Events: what `kubectl describe` shows a person about each decision."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Literal

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
        "count": 1,
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
    ) -> None:
        body = event_body(involved, reason, message, event_type, self.component, now_rfc3339())
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
