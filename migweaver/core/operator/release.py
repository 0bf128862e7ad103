"""Releasing a reserved pod: are its devices Ready, and the one patch that lets it run.

A pod reserved by a plan waits until every one of its devices is Ready on its GPU:

- a MIG device: the MigLayout of its GPU (same GPU UUID) has observed the current spec
  (`status.observedGeneration >= metadata.generation`), MIG mode is on, and the instance
  exists in `status.instances` at the reserved placement with a MIG UUID, held by no other
  pod and by no process;
- a hami-core device: the layout has observed its spec and MIG mode is off.

Then `release_patch` is the single merge patch of the pod: annotation
`migweaver.io/allocation` (the JSON the agent's device plugin reads), `bind-phase:
allocating`, `bind-time`, the reservation annotation removed, `nodeSelector
{kubernetes.io/hostname: <node>}`, and the placement gate removed (other gates kept). It
carries the pod's `resourceVersion`: a pod that changed meanwhile is refused with 409 and
looked at again in the next round.

Pure: no I/O, `now` is passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from migweaver.core.mig.profiles import Placement, normalize_profile_name
from migweaver.core.operator.pod_reservation import PodReservation, ReservedDevice
from migweaver.core.operator.state import ClusterState, gate_names, instance_owners
from migweaver.core.resources.allocation import (
    AllocatedDevice,
    Allocation,
    ContainerAllocation,
    release_annotations,
)
from migweaver.core.resources.api import (
    ANNOTATION_RESERVATION,
    HOSTNAME_LABEL,
    PLACEMENT_GATE,
    metadata_of,
)
from migweaver.core.resources.bodies import MigLayoutBody, PodBody
from migweaver.core.resources.models import InstanceStatus, MigLayout

__all__ = ["NotReady", "leave_patch", "ready_allocation", "release_patch", "ungate_patch"]


@dataclass(frozen=True, slots=True)
class NotReady:
    """The pod must wait; `reason` names the first device that is not Ready yet."""

    pod: str
    reason: str


def _observed(layout: MigLayout, body: MigLayoutBody) -> bool:
    generation = metadata_of(body).get("generation")
    status = layout.status
    if status is None or status.observed_generation is None:
        return False
    return not isinstance(generation, int) or status.observed_generation >= generation


def _instance(layout: MigLayout, device: ReservedDevice) -> InstanceStatus | None:
    if layout.status is None or device.placement is None or device.profile is None:
        return None
    wanted = normalize_profile_name(device.profile)
    for inst in layout.status.instances:
        if inst.placement == device.placement and normalize_profile_name(inst.profile) == wanted:
            return inst
    return None


def _device(
    pod: str,
    device: ReservedDevice,
    node: str,
    state: ClusterState,
    owners: Mapping[tuple[str, int, Placement], str],
) -> AllocatedDevice | str:
    """The allocated device, or why it is not Ready (a short phrase)."""
    where = f"{node}/gpu{device.gpu_index}"
    found = state.layout_at(node, device.gpu_index)
    if found is None:
        return f"{where} has no MigLayout"
    name, layout = found
    if layout.spec.gpu_uuid != device.gpu_uuid:
        return f"{where} is now GPU {layout.spec.gpu_uuid}, not {device.gpu_uuid}"
    if not _observed(layout, state.layout_bodies.get(name, {})):
        return f"{where} is still applying its layout"
    current = layout.status.mig_mode.current if layout.status and layout.status.mig_mode else None
    if device.mode == "hami-core":
        if current != "Disabled":
            return f"{where} still has MIG mode on"
        return AllocatedDevice(
            gpu_uuid=device.gpu_uuid,
            gpu_index=device.gpu_index,
            mode="hami-core",
            memory_mib=device.memory_mib,
            cores=device.cores,
        )
    if current != "Enabled":
        return f"{where} does not have MIG mode on yet"
    inst = _instance(layout, device)
    shown = f"{device.profile} at {device.placement.start if device.placement else '?'}"
    if inst is None or not inst.uuid:
        return f"{shown} on {where} does not exist yet"
    if inst.pod not in (None, pod):
        return f"{shown} on {where} is held by {inst.pod}"
    owner = owners.get((node, device.gpu_index, inst.placement.to_placement()), pod)
    if owner != pod:
        return f"{shown} on {where} belongs to {owner}"
    if inst.in_use and inst.pod is None:
        return f"{shown} on {where} is in use by a process"
    return AllocatedDevice(
        gpu_uuid=device.gpu_uuid,
        gpu_index=device.gpu_index,
        mode="mig",
        profile=inst.profile,
        placement=inst.placement,
        mig_uuid=inst.uuid,
        memory_mib=device.memory_mib,
        cores=device.cores,
    )


def ready_allocation(
    pod: str,
    reservation: PodReservation,
    state: ClusterState,
    owners: Mapping[tuple[str, int, Placement], str] | None = None,
    *,
    uid: str,
) -> Allocation | NotReady:
    """The pod's allocation when every reserved device is Ready, else why it waits.

    The allocation names the pod's `uid`: only this pod may hold its devices
    (`allocation.bound_allocation`).

    `owners` (`operator_state.instance_owners`, computed once per round) says which pod
    each reserved or allocated instance belongs to: a pod whose reserved instance belongs
    to another pod (two replicas reserved it during a hand-over) is not released.
    """
    owners = instance_owners(state) if owners is None else owners
    containers = []
    for container in reservation.containers:
        devices = []
        for device in container.devices:
            result = _device(pod, device, reservation.node, state, owners)
            if isinstance(result, str):
                return NotReady(pod, result)
            devices.append(result)
        containers.append(ContainerAllocation(name=container.name, devices=devices))
    return Allocation(node=reservation.node, pod_uid=uid, containers=containers)


def _gates_after(pod: PodBody) -> list[dict[str, str]] | None:
    remaining = [{"name": g} for g in gate_names(pod) if g != PLACEMENT_GATE]
    return remaining or None


def release_patch(pod: PodBody, allocation: Allocation, hostname: str, now: int) -> dict[str, Any]:
    """The one merge patch that releases a reserved pod to its node."""
    annotations: dict[str, str | None] = dict(release_annotations(allocation, now))
    annotations[ANNOTATION_RESERVATION] = None
    return {
        "metadata": {
            "resourceVersion": metadata_of(pod).get("resourceVersion"),
            "annotations": annotations,
        },
        "spec": {
            "nodeSelector": {HOSTNAME_LABEL: hostname},
            "schedulingGates": _gates_after(pod),
        },
    }


def ungate_patch(pod: PodBody) -> dict[str, Any]:
    """Release a gated pod that asks for no device: only the gate goes."""
    return {
        "metadata": {"resourceVersion": metadata_of(pod).get("resourceVersion")},
        "spec": {"schedulingGates": _gates_after(pod)},
    }


def leave_patch(pod: PodBody) -> dict[str, Any]:
    """When migweaver is uninstalled (`migweaver release-gates`): the placement gate and an
    unreleased reservation go, everything else stays (other gates, a released pod's
    allocation, the pod's own fields). The pod is then the stock scheduler's alone."""
    patch = ungate_patch(pod)
    annotations = metadata_of(pod).get("annotations")
    if isinstance(annotations, Mapping) and ANNOTATION_RESERVATION in annotations:
        patch["metadata"]["annotations"] = {ANNOTATION_RESERVATION: None}
    return patch
