"""The device plugin's `Allocate` decision: which pod the kubelet is admitting, and what
its container gets. Pure: the agent passes in the pods of its node, the number of device
ids the kubelet sent and what it observed on the GPUs; the gRPC servicer only translates.

The kubelet passes device ids, not the pod (the device plugin API has no pod in
`Allocate`), so, as HAMi does, the pod is found by its annotations:

1. candidates are the node's pods with `migweaver.io/bind-phase: allocating` that are not
   being deleted and have not ended;
2. a candidate's *next* container is its first container (in spec order) that asks for
   `nvidia.com/gpu` and has not been allocated yet (the agent remembers, per pod uid, the
   containers it answered: the kubelet allocates a pod's containers in order);
3. the candidate matches when its next container asks for exactly as many
   `nvidia.com/gpu` as the kubelet sent device ids;
4. among matches, the pod the scheduler bound first wins (its `PodScheduled` condition),
   then the oldest pod, then the UID: what only the control plane writes, never the
   tenant-writable `migweaver.io/bind-time`, since the kubelet admits pods in the order
   they were bound to it.

A pod is a candidate only while its allocation is bound to it (`bound_allocation`: it
names the pod's own UID, and the pod asks for `nvidia.com/gpu`): a pod carrying an
allocation written for another pod, or by no operator, never matches, so it can neither
take devices nor stand in for the pod the kubelet is admitting.

The matched container's devices come from the pod's `migweaver.io/allocation`; each must
still be on this node as allocated (a MIG UUID that still exists, at its placement, on a
GPU in MIG mode; a hami-core GPU with MIG off) and free of other pods and processes.
Anything else is a `BindError` naming the pod and the device: never a wrong device.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, Literal, TypeAlias

from migweaver.core.agent.hami_core import LOCK_DIR, Mount, hami_core_env, hami_core_mounts
from migweaver.core.mig.profiles import Placement
from migweaver.core.resources.allocation import (
    BIND_ALLOCATING,
    BIND_SUCCESS,
    RESOURCE_GPU,
    AllocatedDevice,
    Allocation,
    AllocationError,
    ContainerAllocation,
    bound_allocation,
    gpu_containers,
    parse_allocation,
    pod_allocation,
    pod_is_terminal,
    pod_key,
)
from migweaver.core.resources.api import (
    ANNOTATION_ALLOCATION,
    ANNOTATION_BIND_PHASE,
    annotations_of,
)
from migweaver.core.resources.bodies import PodBody

__all__ = [
    "CDI_KIND",
    "DEVICE_LIST_STRATEGIES",
    "VOLUME_MOUNT_ROOT",
    "DeviceListStrategy",
    "Mount",
    "RESOURCE_GPU",
    "BindError",
    "BindErrorCode",
    "ContainerGrant",
    "ContainerMatch",
    "HamiCoreSetup",
    "ObservedGpu",
    "ObservedInstance",
    "PodRef",
    "container_env",
    "decide",
    "gpu_containers",
    "match_container",
    "other_holders",
    "verify_devices",
]

CDI_KIND: Final = "nvidia.com/gpu"
"""CDI device kind of the NVIDIA Container Toolkit's generated spec (`nvidia-ctk cdi`);
the device name is the UUID (`nvidia.com/gpu=MIG-...`, `nvidia.com/gpu=GPU-...`)."""
VOLUME_MOUNT_ROOT: Final = "/var/run/nvidia-container-devices"
"""Where NVIDIA's `volume-mounts` device list strategy names devices."""

DeviceListStrategy: TypeAlias = Literal["cdi", "volume-mounts", "envvar"]
DEVICE_LIST_STRATEGIES: Final[tuple[DeviceListStrategy, ...]] = ("cdi", "volume-mounts", "envvar")

_ENV_VISIBLE: Final = "NVIDIA_VISIBLE_DEVICES"
_ENV_MEMORY_LIMIT: Final = "CUDA_DEVICE_MEMORY_LIMIT_{}"
_ENV_SM_LIMIT: Final = "CUDA_DEVICE_SM_LIMIT"


class BindErrorCode(StrEnum):
    """The gRPC status the kubelet receives (`grpc.StatusCode` names)."""

    NOT_FOUND = "NOT_FOUND"
    """No pod waits for this many devices, or an allocated device no longer exists."""
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    """The pod's allocation cannot be served: malformed, for another node, or a device
    that another pod or a process holds."""
    UNAVAILABLE = "UNAVAILABLE"
    """The agent could not check: the API or the GPU could not be read."""


@dataclass(frozen=True, slots=True)
class PodRef:
    namespace: str
    name: str
    uid: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def of(cls, pod: PodBody) -> PodRef:
        meta = pod.get("metadata")
        m = meta if isinstance(meta, Mapping) else {}
        return cls(str(m.get("namespace") or ""), str(m.get("name") or ""), str(m.get("uid") or ""))


@dataclass(frozen=True, slots=True)
class BindError:
    """Why a container gets no devices. `pod` is None when no pod matched at all (then
    nothing on any pod changes); otherwise that pod's bind-phase becomes `failed`."""

    code: BindErrorCode
    message: str
    pod: PodRef | None = None
    device: str | None = None

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class ObservedInstance:
    """A MIG device that exists now: UUID, profile, placement and the processes on it."""

    uuid: str
    profile: str
    placement: Placement
    pids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class ObservedGpu:
    """One managed GPU of the node as just read from NVML."""

    uuid: str
    index: int
    mig_enabled: bool
    instances: tuple[ObservedInstance, ...] = ()

    def instance(self, uuid: str) -> ObservedInstance | None:
        return next((i for i in self.instances if i.uuid == uuid), None)


@dataclass(frozen=True, slots=True)
class ContainerMatch:
    """The container the kubelet is admitting and its devices.

    `remaining` are the pod's GPU containers after this one (empty: this is the last, and
    the pod's bind-phase becomes `success`); `annotation` is the allocation text the
    decision was made on (the agent re-checks it before writing the bind-phase).
    """

    pod: PodRef
    container: str
    allocation: ContainerAllocation
    remaining: tuple[str, ...]
    annotation: str


@dataclass(frozen=True, slots=True)
class ContainerGrant:
    """What one container gets: environment, CDI device names, mounts, and the devices
    behind them."""

    match: ContainerMatch
    envs: dict[str, str]
    cdi_devices: tuple[str, ...] = ()
    devices: tuple[AllocatedDevice, ...] = field(default=())
    mounts: tuple[Mount, ...] = ()
    """HAMi-core's library, `ld.so.preload` and cache directory (hami-core shares only),
    and the device list of the `volume-mounts` strategy."""

    @property
    def last(self) -> bool:
        return not self.match.remaining


# ------------------------------------------------------------------------------- match


def _waiting(pod: PodBody) -> bool:
    meta = pod.get("metadata")
    deleting = isinstance(meta, Mapping) and meta.get("deletionTimestamp")
    return (
        not deleting
        and not pod_is_terminal(pod)
        and annotations_of(pod).get(ANNOTATION_BIND_PHASE) == BIND_ALLOCATING
    )


def _order(pod: PodBody) -> tuple[str, str, str]:
    # Only what the control plane writes: the scheduler's PodScheduled transition (pods
    # status, which a tenant with the `edit` role cannot write), the creation time and the
    # UID (RFC 3339 in one format sorts as text).
    meta = pod.get("metadata")
    m = meta if isinstance(meta, Mapping) else {}
    created = str(m.get("creationTimestamp") or "")
    return (_scheduled_at(pod) or created, created, str(m.get("uid") or ""))


def _scheduled_at(pod: PodBody) -> str:
    status = pod.get("status")
    conditions = status.get("conditions") if isinstance(status, Mapping) else None
    for condition in conditions if isinstance(conditions, list) else []:
        if (
            isinstance(condition, Mapping)
            and condition.get("type") == "PodScheduled"
            and condition.get("status") == "True"
        ):
            return str(condition.get("lastTransitionTime") or "")
    return ""


def match_container(
    pods: Iterable[PodBody],
    *,
    node: str,
    device_count: int,
    progress: Mapping[str, frozenset[str]] | None = None,
) -> ContainerMatch | BindError:
    """The container the kubelet is admitting (module docstring, steps 1-4).

    `progress` maps a pod uid to the containers already answered. A matched pod whose
    allocation is unusable for this container is an error of that pod, not a reason to
    try the next one: the kubelet is admitting it, and another pod's devices would be a
    wrong device.
    """
    done = progress or {}
    waiting: list[str] = []
    ignored: list[str] = []
    candidates: list[tuple[tuple[str, str, str], PodBody, str, tuple[str, ...]]] = []
    for pod in pods:
        if not _waiting(pod):
            continue
        ref = PodRef.of(pod)
        # A malformed allocation stays a candidate (the pod gets the error that names the
        # field); one that parses but is not bound to the pod is no candidate at all.
        if isinstance(pod_allocation(pod), Allocation):
            bound = bound_allocation(pod)
            if isinstance(bound, AllocationError):
                ignored.append(f"{ref.key} ({bound})")
                continue
        todo = [
            (name, count)
            for name, count in gpu_containers(pod)
            if name not in done.get(ref.uid, frozenset())
        ]
        if not todo:
            continue
        (name, count), rest = todo[0], tuple(n for n, _ in todo[1:])
        waiting.append(f"{ref.key} (container {name} asks {count})")
        if count == device_count:
            candidates.append((_order(pod), pod, name, rest))
    if not candidates:
        why = "; waiting: " + ", ".join(sorted(waiting)) if waiting else "; no pod is waiting"
        if ignored:
            why += "; ignored: " + ", ".join(sorted(ignored))
        return BindError(
            BindErrorCode.NOT_FOUND,
            f"no pod on node {node} with {ANNOTATION_BIND_PHASE}={BIND_ALLOCATING} waits for "
            f"{device_count} {RESOURCE_GPU} in its next container{why}",
        )
    _, pod, container, rest = min(candidates, key=lambda c: c[0])
    ref = PodRef.of(pod)
    text = annotations_of(pod).get(ANNOTATION_ALLOCATION)
    allocation = parse_allocation(text)
    if isinstance(allocation, AllocationError):
        return BindError(BindErrorCode.FAILED_PRECONDITION, f"pod {ref.key}: {allocation}", pod=ref)
    if allocation.node != node:
        return BindError(
            BindErrorCode.FAILED_PRECONDITION,
            f"pod {ref.key}: {ANNOTATION_ALLOCATION} is for node {allocation.node}, "
            f"but the pod runs on {node}",
            pod=ref,
        )
    devices = allocation.container(container)
    if devices is None:
        return BindError(
            BindErrorCode.FAILED_PRECONDITION,
            f"pod {ref.key}: {ANNOTATION_ALLOCATION} has no devices for container {container}",
            pod=ref,
        )
    if len(devices.devices) != device_count:
        return BindError(
            BindErrorCode.FAILED_PRECONDITION,
            f"pod {ref.key} container {container}: {ANNOTATION_ALLOCATION} lists "
            f"{len(devices.devices)} devices, the container asks {device_count} {RESOURCE_GPU}",
            pod=ref,
        )
    assert isinstance(text, str)  # parse_allocation accepted it
    return ContainerMatch(ref, container, devices, rest, text)


# ------------------------------------------------------------------------------ verify


def other_holders(pods: Iterable[PodBody], node: str, exclude_uid: str) -> dict[str, str]:
    """MIG UUID -> `ns/name` of other live pods that hold the device: released to this node
    (`allocating`, not answered yet) or answered (`success`), through an allocation bound
    to them (`bound_allocation`). A pod at `allocating` counts: two pods named one
    instance only through an operator bug or a forgery, and neither may then take it from
    the other."""
    holders: dict[str, str] = {}
    for pod in sorted(pods, key=pod_key):
        ref = PodRef.of(pod)
        annotations = annotations_of(pod)
        if ref.uid == exclude_uid or pod_is_terminal(pod):
            continue
        if annotations.get(ANNOTATION_BIND_PHASE) not in (BIND_SUCCESS, BIND_ALLOCATING):
            continue
        allocation = bound_allocation(pod)
        if not isinstance(allocation, Allocation) or allocation.node != node:
            continue
        for device in allocation.devices:
            if device.mode == "mig" and device.mig_uuid:
                holders.setdefault(device.mig_uuid, ref.key)
    return holders


def verify_devices(
    match: ContainerMatch,
    gpus: Mapping[str, ObservedGpu],
    holders: Mapping[str, str],
) -> BindError | None:
    """None when every device of the match is on the node as allocated and free."""
    where = f"pod {match.pod.key} container {match.container}"
    devices = match.allocation.devices
    modes = {d.mode for d in devices}
    if len(modes) > 1:
        return BindError(
            BindErrorCode.FAILED_PRECONDITION,
            f"{where}: mixes mig and hami-core devices; a container gets one kind",
            pod=match.pod,
        )
    seen: set[str] = set()
    for device in devices:
        name = device.describe()
        error = _device_error(device, gpus, holders, seen)
        if error is not None:
            code, reason = error
            return BindError(
                code, f"{where}: {name}: {reason}", pod=match.pod, device=device.visible_id
            )
        seen.add(device.visible_id)
    return None


def _device_error(
    device: AllocatedDevice,
    gpus: Mapping[str, ObservedGpu],
    holders: Mapping[str, str],
    seen: set[str],
) -> tuple[BindErrorCode, str] | None:
    gpu = gpus.get(device.gpu_uuid)
    if gpu is None:
        return BindErrorCode.NOT_FOUND, "the GPU is not one this agent manages on the node"
    if device.mode == "hami-core":
        if gpu.mig_enabled:
            return BindErrorCode.FAILED_PRECONDITION, "the GPU is in MIG mode, not hami-core"
        return None
    assert device.mig_uuid is not None  # the model requires it for mig devices
    if device.mig_uuid in seen:
        return BindErrorCode.FAILED_PRECONDITION, "listed twice for the container"
    if not gpu.mig_enabled:
        return BindErrorCode.NOT_FOUND, "the GPU is not in MIG mode: the instance is gone"
    instance = gpu.instance(device.mig_uuid)
    if instance is None:
        return BindErrorCode.NOT_FOUND, "no longer exists on the GPU"
    if device.placement is not None and device.placement.to_placement() != instance.placement:
        return (
            BindErrorCode.NOT_FOUND,
            f"that UUID is now a {instance.profile} at {instance.placement}: "
            "the allocated instance no longer exists",
        )
    holder = holders.get(device.mig_uuid)
    if holder is not None:
        return BindErrorCode.FAILED_PRECONDITION, f"already allocated to pod {holder}"
    if instance.pids:
        pids = ", ".join(str(p) for p in instance.pids)
        return BindErrorCode.FAILED_PRECONDITION, f"in use by process {pids} of no pod"
    return None


# ------------------------------------------------------------------------------ answer


def container_env(
    devices: Sequence[AllocatedDevice], strategy: DeviceListStrategy = "cdi"
) -> tuple[dict[str, str], tuple[str, ...], tuple[Mount, ...]]:
    """The environment, CDI device names and mounts of a container with these devices.

    How the devices reach the container (`strategy`, as NVIDIA's device plugin names it):

    - `cdi` (the default): CDI devices `nvidia.com/gpu=<UUID>` (the MIG UUID, or the GPU
      UUID for hami-core), which the kubelet passes to the runtime; no
      `NVIDIA_VISIBLE_DEVICES`. A pod cannot name a CDI device itself;
    - `volume-mounts`: `NVIDIA_VISIBLE_DEVICES=/var/run/nvidia-container-devices` and one
      mount of /dev/null at `/var/run/nvidia-container-devices/<UUID>` per device, which the
      toolkit reads (`accept-nvidia-visible-devices-as-volume-mounts`); a pod cannot add a
      mount at that path to the list the kubelet passes;
    - `envvar`: `NVIDIA_VISIBLE_DEVICES=<UUID>,...`, as before; a pod's own environment
      can imitate it unless the toolkit refuses it (docs/security.md).

    hami-core adds the variables HAMi-core's library reads: `CUDA_DEVICE_MEMORY_LIMIT_<i>`
    (MiB, `m` suffix) for the i-th visible device and `CUDA_DEVICE_SM_LIMIT` (percent of
    SMs; 0 means no limit), with `CUDA_DEVICE_SM_LIMIT_<i>` where a device's limit differs
    from the first. Nothing here depends on the pod's own environment.
    """
    visible = [d.visible_id for d in devices]
    envs: dict[str, str] = {}
    names: tuple[str, ...] = ()
    mounts: tuple[Mount, ...] = ()
    if strategy == "cdi":
        names = tuple(f"{CDI_KIND}={v}" for v in visible)
    elif strategy == "volume-mounts":
        envs[_ENV_VISIBLE] = VOLUME_MOUNT_ROOT
        mounts = tuple(
            Mount(f"{VOLUME_MOUNT_ROOT}/{v}", "/dev/null", read_only=True) for v in visible
        )
    else:
        envs[_ENV_VISIBLE] = ",".join(visible)
    shares = [d for d in devices if d.mode == "hami-core"]
    if shares:
        for i, device in enumerate(shares):
            if device.memory_mib > 0:
                envs[_ENV_MEMORY_LIMIT.format(i)] = f"{device.memory_mib}m"
        envs[_ENV_SM_LIMIT] = str(shares[0].cores)
        for i, device in enumerate(shares):
            if device.cores != shares[0].cores:
                envs[f"{_ENV_SM_LIMIT}_{i}"] = str(device.cores)
    return envs, names, mounts


def decide(
    pods: Sequence[PodBody],
    *,
    node: str,
    device_count: int,
    gpus: Mapping[str, ObservedGpu],
    progress: Mapping[str, frozenset[str]] | None = None,
    strategy: DeviceListStrategy = "cdi",
    hami_core: HamiCoreSetup | None = None,
) -> ContainerGrant | BindError:
    """The answer to one container request of `Allocate` (see the module docstring).

    With `hami_core`, a container with a hami-core share also gets HAMi-core's mounts
    and cache variable (`migweaver.core.agent.hami_core`), so its limits are enforced.
    """
    match = match_container(pods, node=node, device_count=device_count, progress=progress)
    if isinstance(match, BindError):
        return match
    error = verify_devices(match, gpus, other_holders(pods, node, match.pod.uid))
    if error is not None:
        return error
    envs, names, mounts = container_env(match.allocation.devices, strategy)
    if hami_core is not None and any(d.mode == "hami-core" for d in match.allocation.devices):
        uid, container = match.pod.uid, match.container
        mounts += hami_core_mounts(hami_core.host_dir, uid, container, lock_dir=hami_core.lock_dir)
        envs.update(hami_core_env(uid, container))
    return ContainerGrant(match, envs, names, tuple(match.allocation.devices), mounts)


@dataclass(frozen=True, slots=True)
class HamiCoreSetup:
    """Where HAMi-core lives on the host: its directory and the shared lock directory."""

    host_dir: str
    lock_dir: str = LOCK_DIR
