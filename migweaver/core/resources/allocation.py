"""The pod allocation annotation: which devices the operator gave each container of a pod.

The operator writes it when the instances a pod needs are Ready (docs/design.md, "Pod lifecycle",
step 4); the agent's device plugin reads it in `Allocate` and its pod watch turns it into
the in-use accounting of MigLayout status. Annotations on the pod, as HAMi does with its
`hami.io/*` annotations:

- `migweaver.io/allocation`: JSON, see `Allocation`:

  ```json
  {"node": "node-a", "podUID": "8c0e...", "containers": [{"name": "main", "devices": [
    {"gpuUUID": "GPU-...", "gpuIndex": 0, "mode": "mig", "profile": "3g.40gb",
     "placement": {"start": 4, "size": 4}, "migUUID": "MIG-...", "memoryMiB": 40192,
     "cores": 42}]}]}
  ```

- `migweaver.io/bind-phase`: `allocating` (written with the allocation), then `success` or
  `failed` (written by the agent when the kubelet asks for the devices);
- `migweaver.io/bind-time`: unix seconds when the operator released the pod (informational:
  the device plugin orders waiting pods by what only the control plane writes);
- `migweaver.io/bind-error`: why the agent could not hand out the devices (bind-phase
  `failed`).

An allocation is bound to its pod: `podUID` names the pod the operator wrote it on, and a
pod holds devices only through an allocation that names its own UID and only when it asks
for `nvidia.com/gpu` (`bound_allocation`). A pod created with an allocation of its own
cannot know its UID beforehand, and a CPU pod pins nothing (docs/security.md).

Pure: parsing never raises; an annotation that does not parse is an `AllocationError`
naming the field, so the agent can fail that one pod with a message a person can act on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from migweaver.core.resources.api import (
    ANNOTATION_ALLOCATION,
    ANNOTATION_BIND_ERROR,
    ANNOTATION_BIND_PHASE,
    ANNOTATION_BIND_TIME,
    annotations_of,
)
from migweaver.core.resources.models import PlacementModel
from migweaver.core.resources.requests import parse_quantity

__all__ = [
    "BIND_ALLOCATING",
    "BIND_FAILED",
    "BIND_SUCCESS",
    "AllocatedDevice",
    "Allocation",
    "AllocationError",
    "BindPhase",
    "ContainerAllocation",
    "DeviceMode",
    "HeldDevice",
    "bind_patch",
    "bound_allocation",
    "gpu_containers",
    "field_path",
    "held_devices",
    "parse_allocation",
    "parse_bind_time",
    "pod_allocation",
    "pod_key",
    "pod_is_terminal",
    "release_annotations",
]

RESOURCE_GPU: Final = "nvidia.com/gpu"
"""The device plugin's resource: only containers that ask for it get (and hold) devices."""

BindPhase: TypeAlias = Literal["allocating", "success", "failed"]
BIND_ALLOCATING: Final[BindPhase] = "allocating"
BIND_SUCCESS: Final[BindPhase] = "success"
BIND_FAILED: Final[BindPhase] = "failed"

DeviceMode: TypeAlias = Literal["mig", "hami-core"]

# An annotation value is at most 256 KiB in total; a bind error goes into a pod annotation
# and an Event, whose message Kubernetes cuts at 1 KiB anyway.
_MAX_ERROR: Final = 1024
_TERMINAL_PHASES: Final = frozenset({"Succeeded", "Failed"})


class _WireModel(BaseModel):
    # Unknown fields are ignored, not errors: an agent one version behind the operator must
    # still read what a newer operator writes. Types are strict: "2" is not a GPU index.
    model_config = ConfigDict(
        extra="ignore", strict=True, frozen=True, validate_by_name=True, validate_by_alias=True
    )

    def to_api(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class AllocatedDevice(_WireModel):
    """One device of a container: a MIG instance, or a share of a whole GPU (hami-core)."""

    gpu_uuid: str = Field(alias="gpuUUID", min_length=1)
    gpu_index: int = Field(alias="gpuIndex", ge=0)
    mode: DeviceMode
    profile: str | None = None
    placement: PlacementModel | None = None
    mig_uuid: str | None = Field(default=None, alias="migUUID")
    memory_mib: int = Field(alias="memoryMiB", ge=0)
    """MiB of device memory: the instance's size (mig) or the container's limit (hami-core)."""
    cores: int = Field(default=0, ge=0, le=100)
    """Percent of the GPU's SMs (hami-core limit); on MIG informational."""

    @model_validator(mode="after")
    def _mode_fields(self) -> AllocatedDevice:
        if self.mode == "mig" and not self.mig_uuid:
            raise ValueError("a mig device needs migUUID")
        if self.mode == "hami-core" and self.mig_uuid is not None:
            raise ValueError("a hami-core device has no migUUID (it is the whole GPU)")
        return self

    @property
    def visible_id(self) -> str:
        """What `NVIDIA_VISIBLE_DEVICES` names: the MIG UUID, or the GPU UUID."""
        return self.mig_uuid if self.mode == "mig" and self.mig_uuid else self.gpu_uuid

    def describe(self) -> str:
        """`MIG-... (3g.40gb at 4:4) on GPU-...` / `GPU-... (hami-core)`, for messages."""
        if self.mode == "hami-core":
            return f"GPU {self.gpu_uuid} (hami-core share)"
        where = []
        if self.profile:
            where.append(self.profile)
        if self.placement is not None:
            where.append(f"at {self.placement.start}:{self.placement.size}")
        shape = f" ({' '.join(where)})" if where else ""
        return f"MIG instance {self.mig_uuid}{shape} on GPU {self.gpu_uuid}"


class ContainerAllocation(_WireModel):
    """The devices of one container, in the order the container sees them."""

    name: str = Field(min_length=1)
    devices: list[AllocatedDevice] = Field(min_length=1)


class Allocation(_WireModel):
    """The value of `migweaver.io/allocation`: the node and every GPU container's devices."""

    node: str = Field(min_length=1)
    pod_uid: str = Field(default="", alias="podUID")
    """The UID of the pod the operator wrote it on (empty: written by no operator of this
    version; such an allocation holds nothing and is served to no pod)."""
    containers: list[ContainerAllocation] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> Allocation:
        names = [c.name for c in self.containers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"container {', '.join(duplicates)} listed more than once")
        return self

    def container(self, name: str) -> ContainerAllocation | None:
        return next((c for c in self.containers if c.name == name), None)

    @property
    def devices(self) -> list[AllocatedDevice]:
        """Every device of every container."""
        return [d for c in self.containers for d in c.devices]

    def to_annotation(self) -> str:
        """The annotation value: compact JSON with the wire names."""
        return json.dumps(self.to_api(), separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class AllocationError:
    """An allocation annotation that cannot be used; `field` is a path such as
    `containers[0].devices[1].migUUID` (empty for the annotation as a whole)."""

    field: str
    reason: str

    def __str__(self) -> str:
        where = f"{ANNOTATION_ALLOCATION} {self.field}" if self.field else ANNOTATION_ALLOCATION
        return f"{where}: {self.reason}"


def parse_allocation(text: object) -> Allocation | AllocationError:
    """The allocation in an annotation value, or the first reason it is unusable.

    Never raises: not a string, not JSON, a wrong type or a missing field all become an
    `AllocationError` that names the field.
    """
    if text is None:
        return AllocationError("", "missing")
    if not isinstance(text, str):
        return AllocationError("", f"expected a JSON string, got a {type(text).__name__}")
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return AllocationError("", f"not JSON: {exc}")
    if not isinstance(document, dict):
        return AllocationError("", "expected a JSON object")
    try:
        return Allocation.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        return AllocationError(field_path(first.get("loc", ())), str(first.get("msg", "invalid")))
    except RecursionError:
        return AllocationError("", "nested too deeply")


def field_path(loc: Iterable[Any]) -> str:
    """A pydantic error location as a field path: `containers[0].devices[1].migUUID`."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def parse_bind_time(value: object) -> int | None:
    """`migweaver.io/bind-time` as unix seconds; None when absent or not a whole number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = value.strip() if isinstance(value, str) else ""
    # ASCII digits only: `str.isdigit` also accepts `²`, which `int` refuses.
    if text.isascii() and text.isdigit() and len(text) <= 19:
        return int(text)
    return None


# ------------------------------------------------------------------------------- pods


def pod_key(pod: Mapping[str, Any]) -> str:
    """`namespace/name` of a pod (as an API object dict)."""
    metadata = pod.get("metadata")
    meta = metadata if isinstance(metadata, Mapping) else {}
    return f"{meta.get('namespace') or ''}/{meta.get('name') or ''}"


def pod_is_terminal(pod: Mapping[str, Any]) -> bool:
    """The pod's containers have ended for good (phase `Succeeded` or `Failed`)."""
    status = pod.get("status")
    return isinstance(status, Mapping) and status.get("phase") in _TERMINAL_PHASES


def pod_allocation(pod: Mapping[str, Any]) -> Allocation | AllocationError | None:
    """The pod's allocation; None when it has no allocation annotation at all."""
    text = annotations_of(pod).get(ANNOTATION_ALLOCATION)
    if text is None:
        return None
    return parse_allocation(text)


def pod_uid(pod: Mapping[str, Any]) -> str:
    metadata = pod.get("metadata")
    return str(metadata.get("uid") or "") if isinstance(metadata, Mapping) else ""


def gpu_containers(pod: Mapping[str, Any], resource: str = RESOURCE_GPU) -> list[tuple[str, int]]:
    """`(name, count)` of the pod's containers that ask for `resource`, in spec order.

    The count is what the kubelet allocates: the limit (extended resources have equal
    requests and limits), else the request. Unreadable values count as 0: such a pod was
    refused by the API server or the kubelet long before it reaches `Allocate`.
    """
    spec = pod.get("spec")
    containers = spec.get("containers") if isinstance(spec, Mapping) else None
    result: list[tuple[str, int]] = []
    for container in containers if isinstance(containers, list) else []:
        if not isinstance(container, Mapping):
            continue
        resources = container.get("resources")
        res = resources if isinstance(resources, Mapping) else {}
        count = 0
        for section in (res.get("limits"), res.get("requests")):
            if isinstance(section, Mapping) and resource in section:
                try:
                    count = parse_quantity(section[resource])
                except ValueError:
                    count = 0
                break
        if count > 0:
            result.append((str(container.get("name") or ""), count))
    return result


def bound_allocation(pod: Mapping[str, Any]) -> Allocation | AllocationError | None:
    """The pod's allocation if it may hold devices through it, else why not.

    None when the pod has no allocation annotation. An `AllocationError` when it does not
    parse, when it names another pod's UID (or none: a tenant who creates a pod with an
    allocation of their own cannot know the UID the apiserver will give it), or when the
    pod asks for no `nvidia.com/gpu` (a CPU pod never holds an instance, whatever its
    annotations say). Only an allocation the operator wrote on this very pod passes.
    """
    allocation = pod_allocation(pod)
    if not isinstance(allocation, Allocation):
        return allocation
    uid = pod_uid(pod)
    if not allocation.pod_uid or allocation.pod_uid != uid:
        named = allocation.pod_uid or "no pod"
        return AllocationError(
            "podUID",
            f"names {named}, not this pod ({uid or 'no uid'}): not written by the operator "
            "for this pod; it holds nothing",
        )
    if not gpu_containers(pod):
        return AllocationError("", f"the pod asks for no {RESOURCE_GPU}: it holds nothing")
    return allocation


@dataclass(frozen=True, slots=True)
class HeldDevice:
    """A device a pod holds: the pod (`ns/name`) and the GPU the device is on."""

    pod: str
    gpu_uuid: str


def held_devices(pods: Iterable[Mapping[str, Any]], node: str) -> dict[str, HeldDevice]:
    """What the node's pods hold: MIG UUID (mig) or GPU UUID (hami-core) -> `HeldDevice`.

    A pod holds the devices of its allocation (for this node; `bound_allocation`: written
    for this pod, which asks for a GPU) from the moment the operator writes it until the
    pod ends (`Succeeded` / `Failed`) or is gone from the API. A pod being deleted still
    holds them: its containers may run until it is gone. A bind-phase `failed` pod holds
    nothing: the kubelet refused it and never started its containers. A hami-core share
    is held by GPU UUID (a pod on the whole GPU keeps it from switching MIG mode). When
    two pods name one device (an operator bug the device plugin refuses), the first by
    name is reported.
    """
    held: dict[str, HeldDevice] = {}
    for pod in sorted(pods, key=pod_key):
        if pod_is_terminal(pod) or annotations_of(pod).get(ANNOTATION_BIND_PHASE) == BIND_FAILED:
            continue
        allocation = bound_allocation(pod)
        if not isinstance(allocation, Allocation) or allocation.node != node:
            continue
        for device in allocation.devices:
            held.setdefault(device.visible_id, HeldDevice(pod_key(pod), device.gpu_uuid))
    return held


def release_annotations(allocation: Allocation, now: int) -> dict[str, str | None]:
    """The annotations the operator writes when it releases a pod (`now`: unix seconds):
    the allocation, bind-phase `allocating`, the bind-time, and no bind-error left over."""
    return {
        ANNOTATION_ALLOCATION: allocation.to_annotation(),
        ANNOTATION_BIND_PHASE: BIND_ALLOCATING,
        ANNOTATION_BIND_TIME: str(int(now)),
        ANNOTATION_BIND_ERROR: None,
    }


def bind_patch(phase: BindPhase, error: str | None = None) -> dict[str, Any]:
    """A merge patch of the pod that records a bind phase (and clears or sets the error)."""
    message = None if error is None else error[:_MAX_ERROR]
    return {
        "metadata": {"annotations": {ANNOTATION_BIND_PHASE: phase, ANNOTATION_BIND_ERROR: message}}
    }


class _DescribedDevice(Protocol):
    @property
    def mode(self) -> str: ...
    @property
    def gpu_index(self) -> int: ...
    @property
    def memory_mib(self) -> int: ...
    @property
    def profile(self) -> str | None: ...
    @property
    def placement(self) -> PlacementModel | None: ...


class _DescribedContainer(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def devices(self) -> Sequence[_DescribedDevice]: ...


def describe_containers(containers: Iterable[_DescribedContainer]) -> str:
    """`main gets 1g.10gb@6:1 on gpu0; side gets a hami-core share of gpu1 (8000 MiB)`:
    the devices of an allocation or a reservation, for Events and the pod condition."""
    parts = []
    for container in containers:
        devices = []
        for d in container.devices:
            if d.mode == "hami-core":
                devices.append(f"a hami-core share of gpu{d.gpu_index} ({d.memory_mib} MiB)")
            else:
                where = f"@{d.placement.start}:{d.placement.size}" if d.placement else ""
                devices.append(f"{d.profile or 'MIG'}{where} on gpu{d.gpu_index}")
        parts.append(f"{container.name} gets {', '.join(devices)}")
    return "; ".join(parts)
