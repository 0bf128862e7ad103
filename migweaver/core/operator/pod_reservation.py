"""The reservation annotation: which devices a plan gave a pod that still waits for them.

Between the plan and the pod's release the operator records the pod's devices on the pod
itself, in annotation `migweaver.io/reservation` (JSON). Together with the MigLayouts and
the allocation annotations of released pods this is everything the operator knows, so a
restarted operator rebuilds every reservation from the API alone (docs/design.md, "Safety rules"):

```json
{"node": "node-a", "containers": [{"name": "main", "devices": [
  {"gpuUUID": "GPU-...", "gpuIndex": 0, "mode": "mig", "profile": "1g.10gb",
   "placement": {"start": 6, "size": 1}, "memoryMiB": 9728, "cores": 14}]}]}
```

A MIG device names its instance by profile and placement (its MIG UUID does not exist
before the agent creates it); a hami-core device is a share of the whole GPU. When the
pod is released the annotation is removed and `migweaver.io/allocation` takes its place.

Pure: parsing never raises; an annotation that does not parse reads as no reservation
(the pod is planned afresh, which is always safe). So does one that does not fit the
pod's own demand (`reservation_problem`): a reservation is never released on trust,
whoever wrote it (docs/security.md).
"""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from migweaver.core.planning.plan import Assignment, Device
from migweaver.core.resources.allocation import DeviceMode
from migweaver.core.resources.api import ANNOTATION_RESERVATION, annotations_of
from migweaver.core.resources.bodies import PodBody
from migweaver.core.resources.models import PlacementModel
from migweaver.core.resources.requests import PodDemand

__all__ = [
    "ContainerReservation",
    "PodReservation",
    "ReservedDevice",
    "parse_reservation",
    "pod_reservation",
    "reservation_from_assignment",
    "reservation_problem",
]


class _Wire(BaseModel):
    # Unknown fields are ignored so that an operator one version behind still reads it.
    model_config = ConfigDict(
        extra="ignore", strict=True, frozen=True, validate_by_name=True, validate_by_alias=True
    )


class ReservedDevice(_Wire):
    """One reserved device: a MIG instance (profile at placement) or a hami-core share."""

    gpu_uuid: str = Field(alias="gpuUUID", min_length=1)
    gpu_index: int = Field(alias="gpuIndex", ge=0)
    mode: DeviceMode
    profile: str | None = None
    placement: PlacementModel | None = None
    memory_mib: int = Field(alias="memoryMiB", ge=0)
    cores: int = Field(default=0, ge=0, le=100)


class ContainerReservation(_Wire):
    name: str
    devices: list[ReservedDevice] = Field(min_length=1)


class PodReservation(_Wire):
    """The value of `migweaver.io/reservation`."""

    node: str = Field(min_length=1)
    containers: list[ContainerReservation] = Field(default_factory=list)

    @property
    def devices(self) -> list[ReservedDevice]:
        return [d for c in self.containers for d in c.devices]

    def to_annotation(self) -> str:
        return json.dumps(
            self.model_dump(mode="json", by_alias=True, exclude_none=True), separators=(",", ":")
        )


def parse_reservation(text: object) -> PodReservation | None:
    """The reservation in an annotation value; None when absent or unusable."""
    if not isinstance(text, str):
        return None
    try:
        document = json.loads(text)
        return PodReservation.model_validate(document)
    except (ValueError, ValidationError, RecursionError):
        return None


def pod_reservation(pod: PodBody) -> PodReservation | None:
    """The reservation recorded on a pod (an API object dict), if any."""
    return parse_reservation(annotations_of(pod).get(ANNOTATION_RESERVATION))


def _reserved(device: Device) -> ReservedDevice:
    placement = (
        PlacementModel.from_placement(device.placement) if device.placement is not None else None
    )
    return ReservedDevice(
        gpu_uuid=device.gpu_uuid,
        gpu_index=device.gpu_index,
        mode=device.mode,
        profile=device.profile,
        placement=placement,
        memory_mib=device.memory_mib,
        cores=min(max(device.cores, 0), 100),
    )


def reservation_from_assignment(assignment: Assignment) -> PodReservation | None:
    """The reservation a planned pod gets; None for a pod placed nowhere (no devices)."""
    if assignment.node is None:
        return None
    return PodReservation(
        node=assignment.node,
        containers=[
            ContainerReservation(name=c.name, devices=[_reserved(d) for d in c.devices])
            for c in assignment.containers
            if c.devices
        ],
    )


def reservation_problem(demand: PodDemand, reservation: PodReservation) -> str | None:
    """Why `reservation` cannot be the plan of a pod with this demand; None when it can.

    The operator writes reservations exactly as the planner made them, so one that is not
    what a plan gives this pod was not written by it: the GPU containers and their device
    counts must be the pod's, every device of a kind the pod accepts, a hami-core share
    exactly the memory (in MiB, when the pod asks MiB; more than 0 for a percentage) and
    the cores the pod asks, a MIG device a profile at a placement (which must then exist,
    Ready and owned by no other pod: `release.ready_allocation`). Such a reservation is
    dropped and the pod planned afresh.
    """
    wanted = {c.name: c for c in demand.containers}
    given = {c.name: c for c in reservation.containers}
    if set(wanted) != set(given):
        return (
            f"reserves devices for containers {', '.join(sorted(given)) or 'none'}; "
            f"the pod's GPU containers are {', '.join(sorted(wanted)) or 'none'}"
        )
    for name, container in wanted.items():
        devices = given[name].devices
        if len(devices) != container.count:
            return f"container {name}: {len(devices)} devices reserved, it asks {container.count}"
        for device in devices:
            if demand.mode is not None and device.mode != demand.mode.value:
                return f"container {name}: a {device.mode} device, the pod asks {demand.mode}"
            problem = _device_problem(device, container.memory_mib, container.cores)
            if problem is not None:
                return f"container {name}: {problem}"
    return None


def _device_problem(device: ReservedDevice, memory_mib: int | None, cores: int) -> str | None:
    if device.mode == "hami-core":
        if device.memory_mib <= 0:
            return "a hami-core share of 0 MiB (no memory limit)"
        if memory_mib is not None and device.memory_mib != memory_mib:
            return f"a hami-core share of {device.memory_mib} MiB, it asks {memory_mib} MiB"
        if device.cores != cores:
            return f"a hami-core share of {device.cores} % cores, it asks {cores} %"
        return None
    if device.profile is None or device.placement is None:
        return "a MIG device without a profile and placement"
    return None
