"""Builders of API objects (as the Kubernetes API returns them) for the operator's core."""

from __future__ import annotations

from typing import Any

from migweaver.core.operator.pod_reservation import (
    ContainerReservation,
    PodReservation,
    ReservedDevice,
)
from migweaver.core.resources.allocation import AllocatedDevice, Allocation, ContainerAllocation
from migweaver.core.resources.api import (
    ANNOTATION_ALLOCATION,
    ANNOTATION_BIND_PHASE,
    ANNOTATION_RESERVATION,
    PLACEMENT_GATE,
)
from migweaver.core.resources.models import PlacementModel
from tests import builders

JsonDict = dict[str, Any]
A100 = "NVIDIA A100-SXM4-80GB"
Inst = tuple[str, int, int]  # (profile, start, size)


def gpu_uuid(node: str, index: int = 0) -> str:
    return f"GPU-{node}-{index}"


def mig_uuid(node: str, index: int, start: int) -> str:
    return f"MIG-{node}-{index}-{start}"


def layout(
    node: str,
    index: int = 0,
    *,
    spec: list[Inst] | None = None,
    status: list[Inst] | None = None,
    in_use: dict[int, str | None] | None = None,
    mig: bool = True,
    generation: int = 1,
    observed: int | None = 1,
    policy: str = "dynamic",
    rv: str = "10",
    model: str = A100,
) -> JsonDict:
    """A MigLayout; `status` defaults to `spec` (applied), `in_use` maps a placement start
    to the pod holding it (None: a process)."""
    spec = spec or []
    existing = spec if status is None else status
    used = in_use or {}
    instances = []
    for profile, start, size in existing:
        item = builders.placed(profile, start, size, uuid=mig_uuid(node, index, start))
        if start in used:
            item["inUse"] = True
            if used[start] is not None:
                item["pod"] = used[start]
        instances.append(item)
    status = None
    if observed is not None:
        status = {
            "observedGeneration": observed,
            "phase": "Ready",
            "gpu": {"model": model, "memoryMiB": 81920, "migCapable": True},
            "migMode": {"current": "Enabled" if mig else "Disabled"},
            "instances": instances,
        }
    meta = builders.metadata(
        f"{node}-gpu{index}", uid=f"uid-{node}-{index}", rv=rv, generation=generation
    )
    return builders.layout(
        node,
        index,
        uuid=gpu_uuid(node, index),
        meta=meta,
        policy=policy,
        migEnabled=mig,
        instances=[builders.placed(p, s, z) for p, s, z in spec],
        status=status,
    )


def node(name: str, **labels: str) -> JsonDict:
    """A Ready Node, as a kubelet keeps it."""
    return builders.node(
        name,
        labels={"kubernetes.io/hostname": name, **labels},
        status={"conditions": [{"type": "Ready", "status": "True"}]},
    )


def nodes_of(layouts: list[JsonDict]) -> list[JsonDict]:
    """The Node of every layout's node (the planner only uses GPUs of existing Nodes)."""
    return [node(n) for n in sorted({lay["spec"]["nodeName"] for lay in layouts})]


def nodeconfig(
    name: str,
    *,
    node_name: str | None = None,
    selector: dict[str, str] | None = None,
    mode: str = "mig",
    created: str = "2024-01-01T00:00:00Z",
    status: JsonDict | None = None,
    generation: int = 1,
) -> JsonDict:
    spec: JsonDict = {"operatingMode": mode}
    if node_name is not None:
        spec["nodeName"] = node_name
    if selector is not None:
        spec["nodeSelector"] = {"matchLabels": selector}
    body: JsonDict = {
        "apiVersion": "migweaver.io/v1alpha1",
        "kind": "NodeConfig",
        "metadata": {"name": name, "creationTimestamp": created, "generation": generation},
        "spec": spec,
    }
    if status is not None:
        body["status"] = status
    return body


def _mig_device(node_name: str, device: tuple[int, str, int, int]) -> JsonDict:
    """The fields of a 1g.10gb-sized MIG device (gpu index, profile, start, size), as a
    reservation and an allocation both name it."""
    index, profile, start, size = device
    return {
        "gpu_uuid": gpu_uuid(node_name, index),
        "gpu_index": index,
        "mode": "mig",
        "profile": profile,
        "placement": PlacementModel(start=start, size=size),
        "memory_mib": 9728,
        "cores": 14,
    }


def reservation(
    node_name: str, *devices: tuple[int, str, int, int], container: str = "main"
) -> PodReservation:
    """MIG devices as (gpu index, profile, start, size)."""
    return PodReservation(
        node=node_name,
        containers=[
            ContainerReservation(
                name=container,
                devices=[ReservedDevice(**_mig_device(node_name, d)) for d in devices],
            )
        ],
    )


def hami_reservation(node_name: str, index: int, memory: int, cores: int = 0) -> PodReservation:
    return PodReservation(
        node=node_name,
        containers=[
            ContainerReservation(
                name="main",
                devices=[
                    ReservedDevice(
                        gpu_uuid=gpu_uuid(node_name, index),
                        gpu_index=index,
                        mode="hami-core",
                        memory_mib=memory,
                        cores=cores,
                    )
                ],
            )
        ],
    )


def allocation(node_name: str, *devices: tuple[int, str, int, int]) -> Allocation:
    return Allocation(
        node=node_name,
        containers=[
            ContainerAllocation(
                name="main",
                devices=[
                    AllocatedDevice(
                        **_mig_device(node_name, d), mig_uuid=mig_uuid(node_name, d[0], d[2])
                    )
                    for d in devices
                ],
            )
        ],
    )


def pod(
    name: str,
    *,
    gpu: int = 1,
    mem: int | None = 8000,
    cores: int | None = None,
    mode: str | None = "mig",
    gated: bool = True,
    extra_gates: tuple[str, ...] = (),
    reserved: PodReservation | None = None,
    allocated: Allocation | None = None,
    bind_phase: str | None = None,
    phase: str = "Pending",
    deleting: bool = False,
    rv: str = "5",
    namespace: str = "default",
    created: str = "2024-01-01T00:00:00Z",
) -> JsonDict:
    limits = builders.gpu_limits(gpu, mem, cores=cores)
    annotations: JsonDict = {}
    if mode is not None:
        annotations["nvidia.com/vgpu-mode"] = mode
    if reserved is not None:
        annotations[ANNOTATION_RESERVATION] = reserved.to_annotation()
    if allocated is not None:
        if not allocated.pod_uid:  # as the operator writes it: bound to this pod
            allocated = allocated.model_copy(update={"pod_uid": f"uid-{name}"})
        annotations[ANNOTATION_ALLOCATION] = allocated.to_annotation()
        annotations[ANNOTATION_BIND_PHASE] = bind_phase or "success"
    gates = [*([PLACEMENT_GATE] if gated else []), *extra_gates]
    return builders.pod(
        name,
        namespace,
        uid=f"uid-{name}",
        rv=rv,
        created=created,
        annotations=annotations,
        deleting="2024-01-01T01:00:00Z" if deleting else None,
        containers=[builders.container(image="pause", limits=limits)],
        gates=gates or None,
        typed=True,
        phase=phase,
    )
