"""The node's HAMi extended resources, and the JSON patch that keeps them in its status.

HAMi-style pods ask for `nvidia.com/gpumem`, `nvidia.com/gpumem-percentage` and
`nvidia.com/gpucores` as extended resources. A stock kube-scheduler and kubelet refuse a
pod whose node does not advertise them (`Insufficient nvidia.com/gpumem`), so the agent
advertises them in `status.capacity` and `status.allocatable`:

- `nvidia.com/gpumem`: MiB of device memory, summed over the GPUs migweaver manages;
- `nvidia.com/gpumem-percentage` and `nvidia.com/gpucores`: 100 per managed GPU.

They exist for admission only. The scheduler and the kubelet only compare sums (a pod
asking `gpumem: 8000` for each of 2 devices is counted as 8000 in total), so they cannot
tell whether a pod fits on one GPU; the planner decides that and picks the node, and the
operator pins the pod there with a nodeSelector. Pure: no I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from migweaver.core.resources.api import escape_pointer

__all__ = [
    "MANAGED_RESOURCES",
    "RESOURCE_GPUCORES",
    "RESOURCE_GPUMEM",
    "RESOURCE_GPUMEM_PERCENTAGE",
    "node_capacity",
    "status_patch",
]

RESOURCE_GPUMEM: Final = "nvidia.com/gpumem"
RESOURCE_GPUMEM_PERCENTAGE: Final = "nvidia.com/gpumem-percentage"
RESOURCE_GPUCORES: Final = "nvidia.com/gpucores"
MANAGED_RESOURCES: Final = (RESOURCE_GPUMEM, RESOURCE_GPUMEM_PERCENTAGE, RESOURCE_GPUCORES)
_SECTIONS: Final = ("capacity", "allocatable")
_PERCENT_PER_GPU: Final = 100


def node_capacity(gpu_memory_mib: Iterable[int]) -> dict[str, str]:
    """The three resources for GPUs with these memory sizes (MiB), as quantity strings.

    No GPUs gives an empty dict: a node without managed GPUs advertises none of them.
    """
    sizes = [max(0, int(m)) for m in gpu_memory_mib]
    if not sizes:
        return {}
    percent = str(_PERCENT_PER_GPU * len(sizes))
    return {
        RESOURCE_GPUMEM: str(sum(sizes)),
        RESOURCE_GPUMEM_PERCENTAGE: percent,
        RESOURCE_GPUCORES: percent,
    }


def status_patch(node: Mapping[str, Any], desired: Mapping[str, str]) -> list[dict[str, Any]]:
    """JSON patch operations that make the node's capacity and allocatable carry exactly
    `desired` for the managed resources (missing from `desired`: removed).

    Empty when nothing differs, so the caller writes nothing. Quantities are compared as
    text: the API server returns the canonical form and `node_capacity` writes plain
    integers, which are canonical. Other resources are never touched.
    """
    status = node.get("status")
    status = status if isinstance(status, Mapping) else {}
    ops: list[dict[str, Any]] = []
    for section in _SECTIONS:
        current = status.get(section)
        if not isinstance(current, Mapping):
            if desired:
                # JSON patch cannot add a member to a missing object: add the object.
                value = dict(sorted(desired.items()))
                ops.append({"op": "add", "path": f"/status/{section}", "value": value})
            continue
        for resource in MANAGED_RESOURCES:
            path = f"/status/{section}/{escape_pointer(resource)}"
            want = desired.get(resource)
            have = current.get(resource)
            if want is None:
                if have is not None:
                    ops.append({"op": "remove", "path": path})
            elif have is None or str(have) != want:
                # `add` on an existing member replaces it (RFC 6902 4.1).
                ops.append({"op": "add", "path": path, "value": want})
    return ops
