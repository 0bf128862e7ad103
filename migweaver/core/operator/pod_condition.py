"""The pod condition `migweaver.io/Placement`: why a gated pod waits, or where it went.

What `kubectl describe pod` (and `kubectl get pod -o yaml`) shows next to the Events:

| status | reason | when |
|---|---|---|
| False | `MigUnschedulable` | no place now; the message is the planner's nearest miss |
| False | `InvalidRequest` | the GPU request cannot be honoured as written (names the field) |
| False | `MigPlanned` | devices reserved, waiting for them to be Ready (see below) |
| True | `MigReady` | released to its node (names the node and the devices) |

The message is the same text as the pod's Event. `MigPlanned` and `MigReady` are written
only to a pod that already carries the condition (`only_if_present`): a pod placed at its
first plan, the common case, costs no extra API call; a pod that waited sees its
condition turn from `MigUnschedulable` to `MigReady`.

`condition_patch` is the write, or None when the pod's condition already says it (a pod
seen in every round is not patched every round). It is a *strategic merge* patch of the
`pods/status` subresource: pod conditions merge by `type` there, so the scheduler's and
the kubelet's conditions (`PodScheduled`, ...) stay; a JSON merge patch would replace the
whole list. `lastTransitionTime` moves when the status or the reason changes, not when only
the message does.

Pure: no I/O, `now` is passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from migweaver.core.resources.allocation import Allocation, describe_containers
from migweaver.core.resources.api import PLACEMENT_CONDITION
from migweaver.core.resources.bodies import PodBody
from migweaver.core.resources.requests import InvalidRequest, PodDemand

__all__ = [
    "MAX_MESSAGE",
    "PlacementCondition",
    "condition_patch",
    "current_condition",
    "reasons_already_told",
    "planned_condition",
    "ready_condition",
    "unplaceable_condition",
]

MAX_MESSAGE = 1024
"""As an Event's message (`k8s.events.MAX_MESSAGE`): the condition says the same text."""

ConditionStatus = Literal["True", "False"]


@dataclass(frozen=True, slots=True)
class PlacementCondition:
    """What the pod's `migweaver.io/Placement` condition should say."""

    status: ConditionStatus
    reason: str
    message: str


def unplaceable_condition(demand: PodDemand | InvalidRequest, reason: str) -> PlacementCondition:
    """False: `InvalidRequest` for a request that cannot be parsed, else `MigUnschedulable`.

    `reason` is the text of the pod's `MigUnschedulable` Event (`plan_writes.unplaceable`).
    """
    kind = "InvalidRequest" if isinstance(demand, InvalidRequest) else "MigUnschedulable"
    return PlacementCondition("False", kind, reason)


def planned_condition(message: str) -> PlacementCondition:
    """False, `MigPlanned`: `message` is the `MigPlanned` Event's (`planned_message`)."""
    return PlacementCondition("False", "MigPlanned", f"waiting for the reserved devices: {message}")


def ready_condition(allocation: Allocation) -> PlacementCondition:
    """True, `MigReady`: `released to node-a: main gets 1g.10gb@6:1 on gpu0`."""
    devices = describe_containers(allocation.containers)
    return PlacementCondition("True", "MigReady", f"released to {allocation.node}: {devices}")


def current_condition(pod: PodBody) -> Mapping[str, Any] | None:
    """The pod's `migweaver.io/Placement` condition as the API returned it, if any."""
    status = pod.get("status")
    conditions = status.get("conditions") if isinstance(status, Mapping) else None
    for item in conditions if isinstance(conditions, list) else []:
        if isinstance(item, Mapping) and item.get("type") == PLACEMENT_CONDITION:
            return item
    return None


def condition_patch(
    pod: PodBody,
    wanted: PlacementCondition,
    now: str,
    *,
    only_if_present: bool = False,
) -> dict[str, Any] | None:
    """The strategic merge patch of the pod's status that makes its condition say `wanted`.

    None when it already does (status, reason and message), or when `only_if_present` and
    the pod carries no such condition yet.
    """
    current = current_condition(pod)
    if current is None and only_if_present:
        return None
    message = wanted.message[:MAX_MESSAGE]
    if current is not None and (
        current.get("status"),
        current.get("reason"),
        current.get("message"),
    ) == (wanted.status, wanted.reason, message):
        return None
    since = now
    if current is not None and (current.get("status"), current.get("reason")) == (
        wanted.status,
        wanted.reason,
    ):
        since = str(current.get("lastTransitionTime") or now)
    condition = {
        "type": PLACEMENT_CONDITION,
        "status": wanted.status,
        "reason": wanted.reason,
        "message": message,
        "lastTransitionTime": since,
    }
    return {"status": {"conditions": [condition]}}


def reasons_already_told(pods: Mapping[str, PodBody]) -> dict[str, str]:
    """Pod key -> the reason its condition already says it cannot be placed.

    The operator posts a `MigUnschedulable` Event only when a pod's reason changes; seeded
    from the conditions, that memory survives a restart of the operator (it keeps no state
    of its own), so a restart does not repeat every waiting pod's Event.
    """
    told = {}
    for key, pod in pods.items():
        current = current_condition(pod)
        if (
            current is not None
            and current.get("status") == "False"
            and current.get("reason") in {"MigUnschedulable", "InvalidRequest"}
            and isinstance(current.get("message"), str)
        ):
            told[key] = current["message"]
    return told
