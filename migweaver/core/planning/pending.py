"""Pending pods as the planner works with them: per-device requests, filters, order.

A `PodDemand` (from `requests.parse_pod`) becomes a `PendingPod`: its containers as
`(name, count, DeviceReq)`, its filters normalised (upper-case GPU types, UUID sets), its
scheduling policies as booleans, and the two keys the planner memoises by:

- `demand_key`: everything but the UUID filters, including what the pod asks of its node
  (nodeSelector, required node affinity, tolerations; `core/resources/node_fit.py`). Pods with
  equal demand keys get the same answer from a node in a given state, so their node
  evaluations, node heaps and reasons are shared.
- `order_key`: priority (high first), then creation time (old first), then `ns/name`.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from migweaver.core.planning._gpu_options import DeviceReq
from migweaver.core.resources.api import parse_timestamp
from migweaver.core.resources.node_fit import PodConstraints
from migweaver.core.resources.requests import PodDemand, VgpuMode

__all__ = ["PendingPod", "pending_pod"]


@dataclass(frozen=True, slots=True)
class PendingPod:
    """One pod to place, in the planner's terms."""

    demand: PodDemand
    containers: tuple[tuple[str, int, DeviceReq], ...]
    allow_mig: bool
    allow_hami: bool
    use_gputype: tuple[str, ...]
    nouse_gputype: tuple[str, ...]
    use_uuid: frozenset[str] | None
    nouse_uuid: frozenset[str]
    spread_gpu: bool
    spread_node: bool
    created: float
    """Seconds since the epoch; +inf when unknown (such a pod is never "starving")."""
    demand_key: Hashable = None
    """Everything that decides a node's answer except the UUID filters (set by
    `pending_pod`; kept as a field because the planner reads it in its hot loop)."""

    @property
    def key(self) -> str:
        return self.demand.key

    @property
    def total_devices(self) -> int:
        return sum(count for _, count, _ in self.containers)

    @property
    def constraints(self) -> PodConstraints:
        """What the pod asks of its node (nodeSelector, required affinity, tolerations)."""
        return self.demand.constraints

    @property
    def filter_key(self) -> tuple[bool, bool, tuple[str, ...], tuple[str, ...]]:
        """What decides whether a GPU *type* is eligible (UUID filters aside)."""
        return (self.allow_mig, self.allow_hami, self.use_gputype, self.nouse_gputype)

    @property
    def has_uuid_filter(self) -> bool:
        return self.use_uuid is not None or bool(self.nouse_uuid)

    def allows_mode(self, mode: str) -> bool:
        """`nvidia.com/vgpu-mode` lets the pod onto a GPU shared in `mode`."""
        return self.allow_mig if mode == "mig" else self.allow_hami

    def allows_gpu_name(self, name_upper: str) -> bool:
        """`use-gputype` / `nouse-gputype` (substrings) let the pod onto a GPU of this NVML
        name, upper-cased."""
        if self.use_gputype and not any(t in name_upper for t in self.use_gputype):
            return False
        return not any(t in name_upper for t in self.nouse_gputype)

    def allows_uuid(self, uuid: str) -> bool:
        """`use-gpuuuid` / `nouse-gpuuuid` let the pod onto the GPU with this UUID."""
        if self.use_uuid is not None and uuid not in self.use_uuid:
            return False
        return uuid not in self.nouse_uuid

    @property
    def order_key(self) -> tuple[int, float, str]:
        return (-self.demand.pod_priority, self.created, self.key)


def pending_pod(demand: PodDemand) -> PendingPod:
    """The planner's view of a parsed pod."""
    containers = tuple(
        (
            c.name,
            c.count,
            DeviceReq(
                memory_mib=c.memory_mib or 0,
                memory_percentage=0 if c.memory_mib else (c.memory_percentage or 100),
                cores=c.cores,
            ),
        )
        for c in demand.containers
        if c.count > 0
    )
    allow_mig = demand.mode in (None, VgpuMode.MIG)
    allow_hami = demand.mode in (None, VgpuMode.HAMI_CORE)
    use_gputype = tuple(sorted({t.upper() for t in demand.use_gputype}))
    nouse_gputype = tuple(sorted({t.upper() for t in demand.nouse_gputype}))
    spread_gpu = demand.gpu_scheduler_policy == "spread"
    spread_node = demand.node_scheduler_policy == "spread"
    demand_key = (
        tuple((count, req) for _, count, req in containers),
        (allow_mig, allow_hami, use_gputype, nouse_gputype),
        spread_gpu,
        spread_node,
        None if demand.constraints.empty else demand.constraints,
    )
    return PendingPod(
        demand=demand,
        containers=containers,
        allow_mig=allow_mig,
        allow_hami=allow_hami,
        use_gputype=use_gputype,
        nouse_gputype=nouse_gputype,
        use_uuid=frozenset(demand.use_gpuuuid) if demand.use_gpuuuid else None,
        nouse_uuid=frozenset(demand.nouse_gpuuuid),
        spread_gpu=spread_gpu,
        spread_node=spread_node,
        created=parse_timestamp(demand.created),
        demand_key=demand_key,
    )
