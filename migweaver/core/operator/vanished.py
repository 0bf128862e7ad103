"""Released pods whose node vanished before they were bound: replace them, or say why not.

A released pod is ungated and carries `nodeSelector {kubernetes.io/hostname: <node>}` and
the `migweaver.io/allocation` for that node. When the Node object is deleted before the
scheduler binds the pod (no `spec.nodeName`), the pod can never run, and it cannot be
planned again either: Kubernetes refuses to add a scheduling gate back or to change the
nodeSelector of an ungated pod. The only way out is a new pod:

- a pod with a controller (an ownerReference with `controller: true`: ReplicaSet, Job,
  StatefulSet, ...) is evicted (`pods/eviction`, which respects PodDisruptionBudgets); its
  controller creates a new pod, the webhook gates it and the operator plans it again;
- a bare pod is never deleted: it gets a Warning Event `NodeVanished` and its
  `migweaver.io/Placement` condition says why and what to do (delete and re-create it).

Only a pod the operator released (`bound_allocation`: the allocation was written for this
very pod's UID) whose allocation's node has no Node object counts; a NotReady or cordoned
Node still exists and never makes a pod stranded. The operator acts only after the pod has
been seen stranded for a grace period, so a Node being re-registered (deleted and created
again by its kubelet or a cloud controller) does not cost its pods.

Pure: no I/O, `now` is passed in.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from migweaver.core.operator.pod_condition import PlacementCondition, current_condition
from migweaver.core.operator.state import has_placement_gate, is_deleting
from migweaver.core.resources.allocation import (
    Allocation,
    bound_allocation,
    pod_is_terminal,
    pod_key,
)
from migweaver.core.resources.api import metadata_of
from migweaver.core.resources.bodies import PodBody

__all__ = [
    "NODE_VANISHED",
    "Stranded",
    "already_told",
    "controller_of",
    "due_for_action",
    "stranded_pods",
    "stranded_since",
    "vanished_condition",
    "vanished_message",
]

NODE_VANISHED = "NodeVanished"
"""The reason of the pod's Event and condition."""


@dataclass(frozen=True, slots=True)
class Stranded:
    """A released, unbound pod whose node is gone; `controller` is `Kind/name` or None."""

    key: str
    body: PodBody
    node: str
    controller: str | None

    @property
    def evict(self) -> bool:
        """Evicted (its controller replaces it) or, for a bare pod, only explained."""
        return self.controller is not None


def controller_of(pod: PodBody) -> str | None:
    """`Kind/name` of the pod's controlling owner (`controller: true`), if any."""
    owners = metadata_of(pod).get("ownerReferences")
    for owner in owners if isinstance(owners, list) else []:
        if isinstance(owner, Mapping) and owner.get("controller") is True:
            return f"{owner.get('kind') or '?'}/{owner.get('name') or '?'}"
    return None


def _unbound(pod: PodBody) -> bool:
    spec = pod.get("spec")
    return not (isinstance(spec, Mapping) and spec.get("nodeName"))


def stranded_pods(pods: Iterable[PodBody], nodes: Collection[str]) -> dict[str, Stranded]:
    """The pods released to a node that is not in `nodes` (the Node objects' names) and not
    bound yet, by `namespace/name`. Gated, ended and deleting pods are never stranded."""
    found: dict[str, Stranded] = {}
    for pod in pods:
        if has_placement_gate(pod) or is_deleting(pod) or pod_is_terminal(pod):
            continue
        if not _unbound(pod):
            continue
        allocation = bound_allocation(pod)
        if not isinstance(allocation, Allocation) or allocation.node in nodes:
            continue
        key = pod_key(pod)
        found[key] = Stranded(key, pod, allocation.node, controller_of(pod))
    return found


def stranded_since(
    previous: Mapping[str, float], stranded: Iterable[str], now: float
) -> dict[str, float]:
    """When each stranded pod was first seen so (kept from `previous`, else `now`); a pod
    no longer stranded (its Node is back, it was bound or deleted) is forgotten."""
    return {key: previous.get(key, now) for key in stranded}


def due_for_action(
    stranded: Mapping[str, Stranded], since: Mapping[str, float], now: float, grace_s: float
) -> tuple[list[Stranded], float | None]:
    """The stranded pods whose grace period is over (in key order), and the seconds until
    the next one's is (None when no other pod waits for its grace to end)."""
    due: list[Stranded] = []
    wait: float | None = None
    for key in sorted(stranded):
        left = since.get(key, now) + grace_s - now
        if left <= 0:
            due.append(stranded[key])
        else:
            wait = left if wait is None else min(wait, left)
    return due, wait


def vanished_message(pod: Stranded) -> str:
    """The text of the pod's `NodeVanished` Event (and, for a bare pod, its condition)."""
    gone = f"released to node {pod.node}, which no longer exists, before it was bound"
    if pod.controller is not None:
        return f"{gone}: evicted so that its controller {pod.controller} re-creates it"
    return (
        f"{gone}; a released pod cannot be placed again and it has no controller to "
        "re-create it: delete it and create it again"
    )


def vanished_condition(pod: Stranded) -> PlacementCondition:
    """False, `NodeVanished`: what a bare stranded pod's condition says."""
    return PlacementCondition("False", NODE_VANISHED, vanished_message(pod))


def already_told(pod: Stranded) -> bool:
    """Whether the pod's condition already says `NodeVanished`: its Event was posted (also
    by an operator that ran before a restart), so it is not posted again."""
    current = current_condition(pod.body)
    return current is not None and current.get("reason") == NODE_VANISHED
