"""Reservations an earlier plan made for a pod that is still pending.

Between a plan and the pod's release the operator re-plans (new pods arrive, the agent
reports progress). A pod whose reserved devices still serve it keeps them, so plans are
stable across rounds and the agent is never asked to undo work for nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from migweaver.core.planning._gpu_options import DeviceReq, profile_serves
from migweaver.core.planning.pending import PendingPod
from migweaver.core.planning.plan import Assignment, ContainerAssignment, Device
from migweaver.core.planning.snapshot import GpuState, InstanceState, Share

__all__ = ["ReservedItem", "match_reservations"]


@dataclass(frozen=True, slots=True)
class ReservedItem:
    """One reserved device: an instance or a hami-core share on a GPU."""

    gpu: GpuState
    instance: InstanceState | None
    share: Share | None
    share_total: int = 0
    """MiB a percentage of this hami-core GPU is taken of: its memory times
    `deviceMemoryScaling`, as when the share was planned (`GpuType.share_memory`)."""

    def serves(self, req: DeviceReq) -> bool:
        """Whether this device gives a container `req` (memory, percentage, cores)."""
        gpu = self.gpu
        if self.share is not None:
            total = self.share_total or gpu.memory_mib
            wanted = req.memory_mib or total * req.memory_percentage // 100
            return self.share.memory_mib >= wanted and self.share.cores >= req.cores
        assert self.instance is not None
        profile = gpu.table.get(self.instance.profile)
        return profile is not None and profile_serves(gpu.table, profile, req)

    def size(self) -> int:
        if self.share is not None:
            return self.share.memory_mib
        assert self.instance is not None
        profile = self.gpu.table.get(self.instance.profile)
        return profile.memory_mib if profile else 0

    def device(self) -> Device:
        gpu = self.gpu
        if self.share is not None:
            return Device(
                node=gpu.node,
                gpu_index=gpu.index,
                gpu_uuid=gpu.uuid,
                mode="hami-core",
                profile=None,
                placement=None,
                memory_mib=self.share.memory_mib,
                cores=self.share.cores,
            )
        assert self.instance is not None
        profile = gpu.table.get(self.instance.profile)
        compute = max((p.compute_slices for p in gpu.table.profiles), default=1)
        return Device(
            node=gpu.node,
            gpu_index=gpu.index,
            gpu_uuid=gpu.uuid,
            mode="mig",
            profile=self.instance.profile,
            placement=self.instance.placement,
            memory_mib=profile.memory_mib if profile else 0,
            cores=profile.compute_slices * 100 // compute if profile else 0,
            instance_uuid=self.instance.uuid,
        )

    def sort_key(self) -> tuple[int, int, int, int]:
        start = self.instance.placement.start if self.instance else -1
        return (self.size(), self.gpu.index, start, 0 if self.share is None else 1)


def match_reservations(pod: PendingPod, items: list[ReservedItem]) -> Assignment | None:
    """The pod's assignment from its reserved devices, or None when they do not fit it.

    They fit when they all sit on one node, their number equals the pod's devices, and
    each container's devices can be matched to reserved ones that serve them (largest
    requests first, each taking the smallest reserved device that serves it).
    """
    nodes = {item.gpu.node for item in items}
    if len(nodes) != 1 or len(items) != pod.total_devices:
        return None
    if not all(_passes_filters(pod, item) for item in items):
        return None
    free = sorted(items, key=ReservedItem.sort_key)
    chosen: list[list[Device]] = [[] for _ in pod.containers]
    order = sorted(
        range(len(pod.containers)),
        key=lambda i: (-pod.containers[i][2].memory_mib, -pod.containers[i][2].memory_percentage),
    )
    for ci in order:
        _, count, req = pod.containers[ci]
        used_gpus: set[int] = set()
        for _ in range(count):
            match = next(
                (
                    item
                    for item in free
                    if item.serves(req) and not (item.share and item.gpu.index in used_gpus)
                ),
                None,
            )
            if match is None:
                return None
            free.remove(match)
            if match.share is not None:
                used_gpus.add(match.gpu.index)
            chosen[ci].append(match.device())
    containers = tuple(
        ContainerAssignment(name, tuple(devices))
        for (name, _, _), devices in zip(pod.containers, chosen, strict=True)
    )
    return Assignment(pod.key, nodes.pop(), containers, reused=True)


def _passes_filters(pod: PendingPod, item: ReservedItem) -> bool:
    """The pod's filters still allow the reserved device (they may have changed)."""
    gpu = item.gpu
    return (
        pod.allows_mode("hami-core" if item.share is not None else "mig")
        and pod.allows_gpu_name(gpu.name.upper())
        and pod.allows_uuid(gpu.uuid)
    )
