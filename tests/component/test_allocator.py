"""The Allocate shell on its own: fresh reads, the conditional bind-phase write, and what
happens when the API or a GPU cannot be read. GPUs are a stub here; the device plugin
tests run the same code against fake GPUs and a fake kubelet."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from typing import Any

import pytest

from migweaver.agent.deviceplugin.allocator import AllocateFailed, Allocator
from migweaver.agent.deviceplugin.devices import PluginGpu
from migweaver.agent.deviceplugin.gpus import GpuReadError
from migweaver.agent.node_capacity import NodeCapacity
from migweaver.agent.pods import PodWatcher
from migweaver.core.agent.binding import BindErrorCode, ObservedGpu, ObservedInstance
from migweaver.core.mig.profiles import Placement
from migweaver.core.resources.api import (
    ANNOTATION_ALLOCATION,
    ANNOTATION_BIND_ERROR,
    ANNOTATION_BIND_PHASE,
)
from migweaver.k8s.client import ApiError, JsonDict, Listing
from tests import builders
from tests.component.memory_api import MemoryEvents, MemoryNodes, MemoryPods

NODE = "n1"
GPU = "GPU-aaaa"


class StubGpus:
    def __init__(self, error: str | None = None) -> None:
        self.error = error
        self.asked: list[set[str]] = []

    def plugin_gpus(self) -> list[PluginGpu]:
        return [PluginGpu(GPU, 0, True, 7, True)]

    async def observe(self, gpu_uuids: Collection[str]) -> dict[str, ObservedGpu]:
        self.asked.append(set(gpu_uuids))
        if self.error:
            raise GpuReadError(self.error)
        instances = (ObservedInstance("MIG-1", "1g.10gb", Placement(0, 1)),)
        return {GPU: ObservedGpu(GPU, 0, True, instances)}

    def subscribe(self, callback: Callable[[], None]) -> None:
        pass


def allocation(uuid: str = "MIG-1") -> str:
    device = {
        "gpuUUID": GPU,
        "gpuIndex": 0,
        "mode": "mig",
        "profile": "1g.10gb",
        "placement": {"start": 0, "size": 1},
        "migUUID": uuid,
        "memoryMiB": 9728,
    }
    return json.dumps(
        {"node": NODE, "podUID": "uid-p", "containers": [{"name": "main", "devices": [device]}]}
    )


def pod(name: str = "p", alloc: str | None = None) -> JsonDict:
    annotations = {
        ANNOTATION_ALLOCATION: alloc or allocation(),
        ANNOTATION_BIND_PHASE: "allocating",
    }
    return builders.gpu_pod(
        name, "default", annotations=annotations, node_name=NODE, uid=f"uid-{name}"
    )


class RacingPods(MemoryPods):
    """Changes the pod right before the agent's first patch lands (another writer won)."""

    def __init__(self, change: Callable[[JsonDict], None]) -> None:
        super().__init__(NODE)
        self.change = change
        self.raced = False

    async def patch(self, namespace: str, name: str, patch: Any) -> JsonDict:  # type: ignore[override]
        if not self.raced:
            self.raced = True
            obj = self.objects[f"{namespace}/{name}"]
            self.change(obj)
            await self._record("MODIFIED", obj)
        return await super().patch(namespace, name, patch)


async def test_a_conflict_on_an_unchanged_allocation_is_retried() -> None:
    pods = RacingPods(lambda obj: obj["metadata"].setdefault("labels", {}).update({"x": "y"}))
    await pods.add(pod())
    events = MemoryEvents()
    (grant,) = await Allocator(NODE, pods, StubGpus(), events, strategy="envvar").allocate(
        [["GPU-aaaa::0"]]
    )
    assert grant.envs == {"NVIDIA_VISIBLE_DEVICES": "MIG-1"}
    assert pods.annotations("default", "p")[ANNOTATION_BIND_PHASE] == "success"
    assert len(pods.patches) == 2  # the conflicting one and the retry


async def test_a_rewritten_allocation_is_not_handed_out() -> None:
    def rewrite(obj: JsonDict) -> None:
        obj["metadata"]["annotations"][ANNOTATION_ALLOCATION] = allocation("MIG-2")

    pods = RacingPods(rewrite)
    await pods.add(pod())
    events = MemoryEvents()
    with pytest.raises(AllocateFailed) as failed:
        await Allocator(NODE, pods, StubGpus(), events).allocate([["GPU-aaaa::0"]])
    assert failed.value.code is BindErrorCode.FAILED_PRECONDITION
    assert "default/p changed while its devices were allocated" in failed.value.message
    annotations = pods.annotations("default", "p")
    assert annotations[ANNOTATION_BIND_PHASE] == "failed"
    assert "changed while" in annotations[ANNOTATION_BIND_ERROR]
    assert events.reasons("p") == ["MigAllocateFailed"]


async def test_a_conflict_whose_re_read_fails_is_unavailable_and_marks_the_pod() -> None:
    class Flaky(RacingPods):
        async def get(self, namespace: str, name: str) -> JsonDict:  # type: ignore[override]
            raise ApiError(503, "unavailable", f"get pod {namespace}/{name}")

    pods = Flaky(lambda obj: obj["metadata"].setdefault("labels", {}).update({"x": "y"}))
    await pods.add(pod())
    events = MemoryEvents()
    with pytest.raises(AllocateFailed) as failed:
        await Allocator(NODE, pods, StubGpus(), events).allocate([["GPU-aaaa::0"]])
    assert failed.value.code is BindErrorCode.UNAVAILABLE
    assert "default/p: cannot record migweaver.io/bind-phase=success" in failed.value.message
    assert pods.annotations("default", "p")[ANNOTATION_BIND_PHASE] == "failed"
    assert events.reasons("p") == ["MigAllocateFailed"]


async def test_an_unreadable_gpu_fails_the_pod_with_unavailable() -> None:
    pods = MemoryPods(NODE)
    await pods.add(pod())
    events = MemoryEvents()
    gpus = StubGpus(
        error="cannot read GPU 0 (GPU-aaaa): nvmlDeviceGetMigMode: NVML_ERROR_GPU_IS_LOST"
    )
    with pytest.raises(AllocateFailed) as failed:
        await Allocator(NODE, pods, gpus, events).allocate([["GPU-aaaa::0"]])
    assert failed.value.code is BindErrorCode.UNAVAILABLE
    assert "default/p container main" in failed.value.message
    assert "GPU_IS_LOST" in failed.value.message
    assert gpus.asked == [{GPU}]  # only the GPUs of the allocation are read
    assert pods.annotations("default", "p")[ANNOTATION_BIND_PHASE] == "failed"


async def test_an_unreadable_api_fails_without_touching_anything() -> None:
    class Down(MemoryPods):
        async def list(self, label_selector: str | None = None) -> Listing:
            raise ApiError(503, "unavailable", "list pods")

    pods = Down(NODE)
    await pods.add(pod())
    with pytest.raises(AllocateFailed) as failed:
        await Allocator(NODE, pods, StubGpus(), MemoryEvents()).allocate([["GPU-aaaa::0"]])
    assert failed.value.code is BindErrorCode.UNAVAILABLE
    assert "cannot read the pods of node n1" in failed.value.message
    assert pods.patches == []


async def test_one_call_for_two_containers_is_all_or_nothing() -> None:
    pods = MemoryPods(NODE)
    await pods.add(pod("ok"))
    events = MemoryEvents()
    allocator = Allocator(NODE, pods, StubGpus(), events)
    with pytest.raises(AllocateFailed):
        await allocator.allocate([["GPU-aaaa::0"], ["GPU-aaaa::1", "GPU-aaaa::2"]])
    # The first container's match was not committed: no progress, no bind-phase written.
    assert allocator.progress == {}
    assert pods.annotations("default", "ok")[ANNOTATION_BIND_PHASE] == "allocating"
    assert pods.patches == []


# ------------------------------------------------------------------------ pod watcher


async def test_the_pod_watcher_releases_a_deleted_pods_devices() -> None:
    pods = MemoryPods(NODE)
    changes: list[frozenset[str]] = []

    async def on_change(gpus: frozenset[str]) -> None:
        changes.append(gpus)

    watcher = PodWatcher(NODE, pods, on_change=on_change)
    listing = await watcher.sync()
    assert watcher.ready.is_set()
    assert dict(watcher.held) == {}
    await pods.add(pod())
    other_node = pod("elsewhere")
    other_node["spec"]["nodeName"] = "n2"
    await pods.add(other_node)
    async for kind, obj in pods.watch(listing.resource_version, timeout_s=0):
        await watcher.apply(kind, obj)
    assert dict(watcher.held) == {"MIG-1": "default/p"}
    assert watcher.held.get("MIG-1") == "default/p"
    assert "MIG-2" not in watcher.held
    rv = str(pods.version)
    await pods.delete("default", "p")
    async for kind, obj in pods.watch(rv, timeout_s=0):
        await watcher.apply(kind, obj)
    assert dict(watcher.held) == {}
    assert changes == [frozenset({GPU}), frozenset({GPU})]


async def test_a_failing_refresh_does_not_end_the_pod_watch() -> None:
    pods = MemoryPods(NODE)

    async def on_change(gpus: frozenset[str]) -> None:
        raise RuntimeError("cannot schedule new futures after shutdown")

    watcher = PodWatcher(NODE, pods, on_change=on_change)
    listing = await watcher.sync()
    await pods.add(pod())
    async for kind, obj in pods.watch(listing.resource_version, timeout_s=0):
        await watcher.apply(kind, obj)  # does not raise
    assert dict(watcher.held) == {"MIG-1": "default/p"}  # the holders are in force


# ---------------------------------------------------------------------- node capacity


async def test_capacity_retries_once_when_a_removal_races() -> None:
    class Stale(MemoryNodes):
        """The first read still shows a resource another writer has just removed."""

        reads = 0

        async def read_node(self, name: str) -> JsonDict:
            node = await super().read_node(name)
            self.reads += 1
            if self.reads == 1:
                node["status"]["capacity"]["nvidia.com/gpucores"] = "100"
            return node

    nodes = Stale({NODE: {}})
    ops = await NodeCapacity(NODE, nodes).remove()
    assert ops == []  # after the re-read nothing was left to remove
    assert nodes.reads == 2
    assert nodes.status[NODE]["capacity"] == {"cpu": "8", "pods": "110"}


async def test_capacity_writes_only_when_something_differs() -> None:
    nodes = MemoryNodes({NODE: {}})
    capacity = NodeCapacity(NODE, nodes)
    assert len(await capacity.ensure([81920])) == 6
    assert await capacity.ensure([81920]) == []
    assert len(nodes.status_patches) == 1
    assert nodes.status[NODE]["allocatable"]["nvidia.com/gpumem"] == "81920"
