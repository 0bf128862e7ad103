"""From a plan to the API writes that carry it out, and the Events that explain it.

`plan_writes(plan, state)` turns the planner's `Plan` into:

- one `LayoutWrite` per MigLayout whose spec changes: a merge patch of `spec.instances`
  (and `spec.migEnabled`) carrying the `resourceVersion` the plan was made from, so a
  layout that changed meanwhile is refused with 409 and the round is re-planned, never
  overwritten. A patch that would drop an instance that is in use or reserved is not
  emitted at all (`dropped_busy`; the planner never asks for one, this is the last guard);
- one `PodWrite` per pod whose reservation annotation changes (set for a newly planned pod,
  removed from a pod whose old reservation no longer serves it), also conditional on the
  pod's `resourceVersion`;
- the pods that need no device at all (`ungate`: released as they are);
- the waiting pods' reasons (`unplaceable`), for `MigUnschedulable` Events.

`unschedulable_events` keeps those Events from repeating: a pod gets one when its reason
changes, not on every batch.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from migweaver.core.mig.geometry import PlacedInstance
from migweaver.core.mig.profiles import Placement, normalize_profile_name
from migweaver.core.operator.pod_reservation import PodReservation, reservation_from_assignment
from migweaver.core.operator.state import ClusterState, WaitingPod
from migweaver.core.planning.plan import Assignment, Plan, Unplaceable
from migweaver.core.planning.snapshot import GpuKey, Snapshot
from migweaver.core.resources.allocation import describe_containers
from migweaver.core.resources.api import ANNOTATION_RESERVATION, annotations_of, metadata_of
from migweaver.core.resources.models import LayoutInstance, MigLayout, PlacementModel
from migweaver.core.resources.requests import InvalidRequest

__all__ = [
    "LayoutWrite",
    "PlanWrites",
    "PodWrite",
    "busy_instances",
    "dropped_busy",
    "layout_change_message",
    "plan_writes",
    "planned_message",
    "unschedulable_events",
]


@dataclass(frozen=True, slots=True)
class LayoutWrite:
    """A merge patch of one MigLayout's spec, conditional on its resourceVersion."""

    name: str
    gpu: GpuKey
    patch: dict[str, Any]
    before: tuple[PlacedInstance, ...]
    after: tuple[PlacedInstance, ...]
    mig_enabled: bool | None = None
    """Set when the plan switches MIG mode on."""
    for_pods: tuple[str, ...] = ()
    """The pods the plan gives the instances this write adds (this GPU's only)."""


@dataclass(frozen=True, slots=True)
class PodWrite:
    """A merge patch of one pod's reservation annotation (None removes it)."""

    key: str
    namespace: str
    name: str
    patch: dict[str, Any]
    reservation: PodReservation | None


@dataclass(frozen=True, slots=True)
class PlanWrites:
    layouts: list[LayoutWrite] = field(default_factory=list)
    pods: list[PodWrite] = field(default_factory=list)
    ungate: list[str] = field(default_factory=list)
    """Waiting pods that ask for no device: released without any."""
    unplaceable: dict[str, str] = field(default_factory=dict)
    """Pod -> reason, for every waiting pod that cannot be placed now (or is invalid)."""
    skipped: list[str] = field(default_factory=list)
    """Layouts whose patch was withheld because it would drop a busy instance (a bug)."""


def _placed(layout: MigLayout) -> tuple[PlacedInstance, ...]:
    return tuple(
        PlacedInstance(i.profile, i.placement.to_placement())
        for i in sorted(layout.spec.instances, key=lambda i: (i.placement.start, i.profile))
    )


def busy_instances(snapshot: Snapshot) -> dict[GpuKey, set[tuple[str, Placement]]]:
    """Per GPU, (normalized profile, placement) of every busy instance in the snapshot."""
    return {
        state.key: {
            (normalize_profile_name(i.profile), i.placement) for i in state.instances if i.busy
        }
        for state in snapshot.gpus()
    }


def dropped_busy(
    busy: Iterable[tuple[str, Placement]], after: Iterable[PlacedInstance]
) -> list[tuple[str, Placement]]:
    """The busy instances a new spec would drop (or move): must always be empty."""
    kept = {(normalize_profile_name(p.profile), p.placement) for p in after}
    return sorted((b for b in busy if b not in kept), key=lambda b: (b[1], b[0]))


def _spec_instances(instances: Iterable[PlacedInstance]) -> list[dict[str, Any]]:
    return [
        LayoutInstance(
            profile=i.profile, placement=PlacementModel.from_placement(i.placement)
        ).to_api()
        for i in instances
    ]


def _layout_writes(plan: Plan, state: ClusterState, snapshot: Snapshot) -> PlanWrites:
    writes = PlanWrites()
    busy = busy_instances(snapshot)
    for gpu in sorted(set(plan.layouts) | set(plan.mig_enabled)):
        found = state.layout_at(*gpu)
        if found is None:
            continue
        name, layout = found
        before = _placed(layout)
        after = plan.layouts.get(gpu, before)
        if dropped_busy(busy.get(gpu, set()), after):
            writes.skipped.append(name)
            continue
        spec: dict[str, Any] = {}
        if gpu in plan.layouts:
            spec["instances"] = _spec_instances(after)
        switch = plan.mig_enabled.get(gpu)
        if switch is not None and switch != layout.spec.mig_enabled:
            spec["migEnabled"] = switch
        if not spec:
            continue
        rv = metadata_of(state.layout_bodies.get(name, {})).get("resourceVersion")
        patch = {"metadata": {"resourceVersion": rv}, "spec": spec}
        added = set(after) - set(before)
        for_pods = sorted({pod for inst, pod in plan.reservations.get(gpu, ()) if inst in added})
        writes.layouts.append(
            LayoutWrite(name, gpu, patch, before, tuple(after), switch, tuple(for_pods))
        )
    return writes


def _pod_write(waiting: WaitingPod, reservation: PodReservation | None) -> PodWrite | None:
    value = reservation.to_annotation() if reservation is not None else None
    current = annotations_of(waiting.body).get(ANNOTATION_RESERVATION)
    if current == value or (current is None and value is None):
        return None
    meta = metadata_of(waiting.body)
    patch = {
        "metadata": {
            "resourceVersion": meta.get("resourceVersion"),
            "annotations": {ANNOTATION_RESERVATION: value},
        }
    }
    return PodWrite(
        waiting.key,
        str(meta.get("namespace") or ""),
        str(meta.get("name") or ""),
        patch,
        reservation,
    )


def plan_writes(plan: Plan, state: ClusterState, snapshot: Snapshot) -> PlanWrites:
    """The writes that carry out `plan`, made from `state` (and its `snapshot`)."""
    writes = _layout_writes(plan, state, snapshot)
    for waiting in state.waiting:
        result = plan.pods.get(waiting.key)
        unplaceable = (
            f"invalid GPU request: {waiting.demand.message}"
            if isinstance(waiting.demand, InvalidRequest)
            else result.reason
            if isinstance(result, Unplaceable)
            else None
        )
        if unplaceable is not None:
            writes.unplaceable[waiting.key] = unplaceable
            # An old reservation that no longer serves the pod was released by the plan;
            # one the operator ignored (docs/security.md) goes too.
            write = _pod_write(waiting, None)
            if write is not None:
                writes.pods.append(write)
        elif isinstance(result, Assignment):
            if result.node is None:
                writes.ungate.append(waiting.key)
                continue
            if result.reused:
                continue
            write = _pod_write(waiting, reservation_from_assignment(result))
            if write is not None:
                writes.pods.append(write)
    return writes


def layout_change_message(write: LayoutWrite) -> str:
    """`instances 3g.40gb@0:4 -> 3g.40gb@0:4, 1g.10gb@6:1; for default/gpu-pod`."""

    def show(items: Iterable[PlacedInstance]) -> str:
        text = ", ".join(str(i) for i in items)
        return text or "none"

    parts = [f"instances {show(write.before)} -> {show(write.after)}"]
    if write.mig_enabled:
        parts.append("MIG mode on")
    if write.for_pods:
        parts.append(f"for {', '.join(write.for_pods)}")
    return "; ".join(parts)


def unschedulable_events(
    previous: Mapping[str, str], current: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """(events to post now, memory for the next round).

    A pod gets a `MigUnschedulable` Event when its reason differs from the one it last got;
    the memory keeps only the pods that still wait, so a pod that was placed and waits
    again later gets its Event again.
    """
    events = {pod: reason for pod, reason in current.items() if previous.get(pod) != reason}
    return events, dict(current)


def planned_message(reservation: PodReservation) -> str:
    """`node-a: main gets 1g.10gb@6:1 on gpu0; ...` for the `MigPlanned` Event."""
    return f"{reservation.node}: {describe_containers(reservation.containers)}"
