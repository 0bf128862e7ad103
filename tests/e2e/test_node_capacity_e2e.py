"""The agent's API writes against a Kubernetes API (the emulator, or a real cluster):
the node's extended resources through the status subresource (JSON patch), and the pod
calls of the device plugin and the pod watch (field selector, conditional patch, watch)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from migweaver.agent.node_capacity import NodeCapacity
from migweaver.core.resources.api import ANNOTATION_BIND_PHASE
from migweaver.k8s.client import Conflict, CoreObjects, NodePods
from tests.e2e.kube_api import NODES, PODS, Kube, meta

GPU_RESOURCES = ("nvidia.com/gpumem", "nvidia.com/gpumem-percentage", "nvidia.com/gpucores")


def node_body(name: str) -> dict[str, Any]:
    resources = {"cpu": "4", "memory": "8Gi", "pods": "110"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"capacity": dict(resources), "allocatable": dict(resources)},
    }


def pod_body(name: str, node: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": {ANNOTATION_BIND_PHASE: "allocating"}},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.9"}],
        },
    }


async def test_node_capacity_is_written_kept_and_removed(kube: Kube) -> None:
    name = kube.name("mw-capacity")
    await kube.create(NODES, node_body(name))
    capacity = NodeCapacity(name, CoreObjects(kube.api))

    assert len(await capacity.ensure([81920, 24576])) == 6
    status = (await kube.get(NODES, name))["status"]
    for section in ("capacity", "allocatable"):
        assert status[section]["nvidia.com/gpumem"] == "106496"
        assert status[section]["nvidia.com/gpumem-percentage"] == "200"
        assert status[section]["nvidia.com/gpucores"] == "200"
        assert status[section]["cpu"] == "4"
    # The API's canonical quantities equal what the agent writes: nothing to do again.
    assert await capacity.ensure([81920, 24576]) == []

    # Someone (a kubelet without its device checkpoint) zeroes one: put back alone.
    await kube.patch(
        NODES,
        name,
        [{"op": "replace", "path": "/status/capacity/nvidia.com~1gpumem", "value": "0"}],
        content_type="application/json-patch+json",
        subresource="status",
    )
    assert await capacity.ensure([81920, 24576]) == [
        {"op": "add", "path": "/status/capacity/nvidia.com~1gpumem", "value": "106496"}
    ]

    await capacity.remove()
    status = (await kube.get(NODES, name))["status"]
    for section in ("capacity", "allocatable"):
        assert not set(GPU_RESOURCES) & set(status[section])
        assert status[section]["cpu"] == "4"
    assert await capacity.remove() == []


async def test_node_pods_see_their_node_only_and_patch_conditionally(kube: Kube) -> None:
    node = kube.name("mw-pods")
    mine = await kube.create(PODS, pod_body("mw-mine", node))
    await kube.create(PODS, pod_body("mw-elsewhere", kube.name("mw-other")))
    pods = NodePods(kube.api, node)

    listing = await pods.list()
    assert [meta(p)["name"] for p in listing.items] == ["mw-mine"]

    namespace = kube.namespace
    stale = meta(mine)["resourceVersion"]
    patched = await pods.patch(
        namespace,
        "mw-mine",
        {"metadata": {"resourceVersion": stale, "annotations": {ANNOTATION_BIND_PHASE: "success"}}},
    )
    assert meta(patched)["annotations"][ANNOTATION_BIND_PHASE] == "success"
    with pytest.raises(Conflict):
        await pods.patch(
            namespace,
            "mw-mine",
            {
                "metadata": {
                    "resourceVersion": stale,
                    "annotations": {ANNOTATION_BIND_PHASE: "failed"},
                }
            },
        )
    fetched = await pods.get(namespace, "mw-mine")
    assert meta(fetched)["annotations"][ANNOTATION_BIND_PHASE] == "success"

    # The watch from the listing sees the patch of this node's pod.
    async def first_modified() -> dict[str, Any]:
        async with contextlib.aclosing(
            pods.watch(listing.resource_version, timeout_s=10)
        ) as events:
            async for kind, obj in events:
                if kind == "MODIFIED":
                    return obj
        raise AssertionError("the watch ended without the patch")

    seen = await asyncio.wait_for(first_modified(), 15)
    assert meta(seen)["name"] == "mw-mine"
    assert seen["spec"]["nodeName"] == node
