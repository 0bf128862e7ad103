"""Keeps the node's HAMi extended resources in its status (see `core.node_resources`).

The agent writes `nvidia.com/gpumem`, `nvidia.com/gpumem-percentage` and
`nvidia.com/gpucores` into `status.capacity` and `status.allocatable` of its Node with a
JSON patch of the status subresource, only when they differ from what the Node says. It
checks again after every change of its GPUs, after every registration with the kubelet
(a kubelet that lost its device checkpoint zeroes extended resources it does not manage)
and every resync; on a clean shutdown it removes them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from migweaver.core.agent.node_resources import node_capacity, status_patch
from migweaver.k8s.client import JSON_PATCH, ApiError, JsonDict
from migweaver.logs import get_logger

log = get_logger("migweaver.agent.capacity")


class NodeStatusStore(Protocol):
    """The Node calls needed (`k8s.client.CoreObjects` fits)."""

    async def read_node(self, name: str) -> JsonDict: ...
    async def patch_node_status(self, name: str, patch: Any, content_type: str) -> JsonDict: ...


class NodeCapacity:
    """Writes the extended resources of one node."""

    def __init__(self, node: str, nodes: NodeStatusStore) -> None:
        self.node = node
        self._nodes = nodes
        self.desired: dict[str, str] = {}

    async def ensure(self, gpu_memory_mib: Iterable[int]) -> list[dict[str, Any]]:
        """Make the node advertise the resources of these GPUs; returns the ops written."""
        self.desired = node_capacity(gpu_memory_mib)
        return await self._apply(self.desired)

    async def remove(self) -> list[dict[str, Any]]:
        """Take the resources off the node (the agent no longer manages it)."""
        self.desired = {}
        return await self._apply({})

    async def _apply(self, desired: Mapping[str, str]) -> list[dict[str, Any]]:
        # A second try covers the one race that fails a JSON patch: a `remove` of a member
        # someone removed between our read and our patch (422). Reading again fixes it.
        for attempt in (1, 2):
            node = await self._nodes.read_node(self.node)
            ops = status_patch(node, desired)
            if not ops:
                return []
            try:
                await self._nodes.patch_node_status(self.node, ops, JSON_PATCH)
            except ApiError as exc:
                if attempt == 2 or exc.status != 422:
                    raise
                continue
            log.info(
                "node extended resources written",
                node=self.node,
                resources=dict(desired) or "removed",
            )
            return ops
        return []  # pragma: no cover - the loop returns or raises
