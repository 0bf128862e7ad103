"""The device plugin against a fake kubelet over real gRPC unix sockets.

The whole node side runs as in the cluster (`run_node`: pod watch, `NodeAgent` on fake
GPUs, device plugin, node capacity) against in-memory API objects; the test plays the
operator (MigLayout specs, pod annotations) and the kubelet (`FakeKubelet`).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from migweaver.agent.backends.fake import FakeBackend
from migweaver.agent.backends.protocol import NvmlError
from migweaver.agent.deviceplugin import api_pb2
from migweaver.agent.deviceplugin.allocator import Allocator
from migweaver.agent.deviceplugin.gpus import AgentGpus
from migweaver.agent.deviceplugin.hami_core import HamiCoreHost
from migweaver.agent.deviceplugin.server import DevicePluginServer
from migweaver.agent.main import run_node
from migweaver.agent.node_agent import NodeAgent
from migweaver.agent.node_capacity import NodeCapacity
from migweaver.agent.pods import PodWatcher
from migweaver.core.agent.binding import DeviceListStrategy
from migweaver.core.mig.profiles import Placement
from migweaver.core.resources.api import (
    ANNOTATION_ALLOCATION,
    ANNOTATION_BIND_ERROR,
    ANNOTATION_BIND_PHASE,
    ANNOTATION_BIND_TIME,
)
from tests import builders
from tests.component.fake_kubelet import FakeKubelet
from tests.component.memory_api import MemoryEvents, MemoryNodes, MemoryObjects, MemoryPods

NODE = "n1"
SEED_POD = Path(__file__).resolve().parents[2] / "examples" / "pod-seed.yaml"


@pytest.fixture
def plugin_dir() -> Iterator[Path]:
    # Not tmp_path: a unix socket path must stay under 108 bytes.
    path = Path(tempfile.mkdtemp(prefix="mw-dp-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@dataclass
class Node:
    backend: FakeBackend
    layouts: MemoryObjects
    pods: MemoryPods
    nodes: MemoryNodes
    events: MemoryEvents
    agent: NodeAgent
    plugin: DevicePluginServer
    kubelet: FakeKubelet

    def status(self, gpu: int) -> dict[str, Any]:
        return dict(self.layouts.objects[f"{NODE}-gpu{gpu}"].get("status") or {})

    async def wait_layout(self, gpu: int, predicate: Any) -> dict[str, Any]:
        name = f"{NODE}-gpu{gpu}"

        def holds(store: MemoryObjects) -> bool:
            return bool(predicate(store.objects[name].get("status") or {}))

        async with asyncio.timeout(10):
            await self.layouts.wait_for(holds)
        return self.status(gpu)

    async def plan(self, gpu: int, *instances: str) -> list[dict[str, Any]]:
        """Play the operator: a spec with these instances (`"1g.10gb@0"`), until Ready."""
        table = self.backend.table(gpu)
        spec = []
        for item in instances:
            name, start = item.split("@")
            profile = table.get(name)
            assert profile is not None
            spec.append(
                {"profile": name, "placement": {"start": int(start), "size": profile.memory_slices}}
            )
        await self.layouts.patch(
            f"{NODE}-gpu{gpu}", {"spec": {"migEnabled": True, "instances": spec}}
        )

        def ready(status: dict[str, Any]) -> bool:
            return status.get("phase") == "Ready" and len(status.get("instances") or []) == len(
                instances
            )

        status = await self.wait_layout(gpu, ready)
        return list(status["instances"])

    async def device_ids(self, count: int) -> list[str]:
        """`count` healthy ids the kubelet would hand to a container."""
        devices = await self.kubelet.devices()
        return [d for d, health in devices if health == "Healthy"][:count]


@contextlib.asynccontextmanager
async def running(
    backend: FakeBackend,
    plugin_dir: Path,
    *,
    strategy: DeviceListStrategy = "envvar",
    split_count: int = 10,
    hami_core: HamiCoreHost | None = None,
) -> AsyncIterator[Node]:
    kubelet = FakeKubelet(plugin_dir)
    await kubelet.start()
    layouts = MemoryObjects()
    pods = MemoryPods(NODE)
    nodes = MemoryNodes({NODE: {}})
    events = MemoryEvents()
    agent: NodeAgent

    async def refresh(gpus: frozenset[str]) -> None:
        await agent.refresh(gpus)

    watcher = PodWatcher(NODE, pods, on_change=refresh, resync_s=5)
    agent = NodeAgent(
        NODE,
        backend,
        layouts,
        MemoryObjects(),
        nodes,
        events,
        held_by_pods=lambda: watcher.held,
        resync_s=5,
    )
    gpus = AgentGpus(agent, split_count)
    plugin = DevicePluginServer(
        gpus,
        Allocator(NODE, pods, gpus, events, strategy=strategy, hami_core=hami_core),
        plugin_dir=plugin_dir,
        poll_s=0.05,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_node(agent, watcher, NodeCapacity(NODE, nodes), plugin, stop, resync_s=5)
    )
    try:
        await kubelet.registrations(1)
        await kubelet.devices()  # the kubelet is connected to the plugin
        yield Node(backend, layouts, pods, nodes, events, agent, plugin, kubelet)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await kubelet.stop()


def mig_device(backend: FakeBackend, gpu: int, instance: dict[str, Any]) -> dict[str, Any]:
    """An allocation entry for an instance of a MigLayout status, as the operator writes it."""
    profile = backend.table(gpu).get(instance["profile"])
    assert profile is not None
    return {
        "gpuUUID": backend.uuid(gpu),
        "gpuIndex": gpu,
        "mode": "mig",
        "profile": instance["profile"],
        "placement": instance["placement"],
        "migUUID": instance["uuid"],
        "memoryMiB": profile.memory_mib,
        "cores": 100 * profile.compute_slices // 7,
    }


def bound_to(alloc: str, uid: str) -> str:
    """The allocation as the operator writes it on the pod with this UID."""
    return json.dumps({**json.loads(alloc), "podUID": uid})


def allocation(containers: dict[str, list[dict[str, Any]]]) -> str:
    return json.dumps(
        {"node": NODE, "containers": [{"name": n, "devices": d} for n, d in containers.items()]}
    )


def pod(
    name: str,
    containers: dict[str, int],
    *,
    alloc: str | None = None,
    phase: str = "allocating",
    bind_time: int = 1000,
    created: str = "2026-01-01T00:00:00Z",
    uid: str | None = None,
) -> dict[str, Any]:
    annotations = {ANNOTATION_BIND_PHASE: phase, ANNOTATION_BIND_TIME: str(bind_time)}
    uid = uid or f"uid-{name}"
    if alloc is not None:
        annotations[ANNOTATION_ALLOCATION] = bound_to(alloc, uid)
    return builders.pod(
        name,
        "default",
        uid=uid,
        annotations=annotations,
        created=created,
        node_name=NODE,
        containers=[
            builders.container(c, limits=builders.gpu_limits(n)) for c, n in containers.items()
        ],
        phase="Pending",
    )


def seed_pod(alloc: str) -> dict[str, Any]:
    """examples/pod-seed.yaml as the operator leaves it: annotated and bound to the node."""
    manifest = yaml.safe_load(SEED_POD.read_text())
    manifest["metadata"]["namespace"] = "default"
    manifest["metadata"]["uid"] = "uid-seed"
    manifest["metadata"]["annotations"].update(
        {
            ANNOTATION_ALLOCATION: bound_to(alloc, "uid-seed"),
            ANNOTATION_BIND_PHASE: "allocating",
            ANNOTATION_BIND_TIME: "1000",
        }
    )
    manifest["spec"]["nodeName"] = NODE
    manifest["status"] = {"phase": "Pending"}
    return dict(manifest)


# ---------------------------------------------------------------------- registration


async def test_the_plugin_registers_nvidia_gpu_with_the_kubelet(plugin_dir: Path) -> None:
    backend = FakeBackend.from_spec("A100-SXM4-80GB:1", seed=NODE, mig_enabled=True)
    async with running(backend, plugin_dir) as node:
        request = node.kubelet.requests[0]
        assert request.version == "v1beta1"
        assert request.resource_name == "nvidia.com/gpu"
        assert request.endpoint == node.plugin.endpoint
        assert "/" not in request.endpoint
        assert (plugin_dir / request.endpoint).is_socket()
        assert request.options.pre_start_required is False
        options = await node.kubelet.plugin().GetDevicePluginOptions(api_pb2.Empty())
        assert options.pre_start_required is False
        assert options.get_preferred_allocation_available is False


async def test_the_plugin_registers_again_when_the_kubelet_restarts(plugin_dir: Path) -> None:
    backend = FakeBackend.from_spec("A100-SXM4-80GB:1", seed=NODE, mig_enabled=True)
    async with running(backend, plugin_dir) as node:
        await node.kubelet.devices()
        await node.kubelet.restart()  # kubelet.sock recreated, the plugin's socket deleted
        second = await node.kubelet.registrations(2)
        assert second.resource_name == "nvidia.com/gpu"
        assert (plugin_dir / second.endpoint).is_socket()
        # The new kubelet talks to the plugin over the new socket.
        await node.kubelet.wait_for(lambda k: len(k.device_lists) >= 2)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await node.kubelet.allocate(["x::0"])
        assert error.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_recreated_kubelet_socket_alone_also_means_register_again(plugin_dir: Path) -> None:
    backend = FakeBackend.from_spec("A30-24GB:1", seed=NODE, mig_enabled=True)
    async with running(backend, plugin_dir) as node:
        own = (plugin_dir / node.plugin.endpoint).stat().st_ino
        await node.kubelet.stop()
        await node.kubelet.start()
        await node.kubelet.registrations(2)
        assert (plugin_dir / node.plugin.endpoint).stat().st_ino == own


# --------------------------------------------------------------------------- devices


async def test_devices_are_listed_per_instance_slot_and_per_share(plugin_dir: Path) -> None:
    backend = FakeBackend(
        ["A100-SXM4-80GB", "A30-24GB", "H100-SXM5-80GB"], seed=NODE, mig_enabled=True
    )
    backend.set_mig_mode(2, False)  # a hami-core GPU
    async with running(backend, plugin_dir, split_count=5) as node:
        devices = await node.kubelet.devices(lambda d: len(d) == 16)
        by_gpu: dict[str, list[str]] = {}
        for device_id, health in devices:
            gpu, _, n = device_id.rpartition("::")
            assert health == "Healthy"
            assert len(device_id) <= 63
            by_gpu.setdefault(gpu, []).append(n)
        assert {gpu: len(ns) for gpu, ns in by_gpu.items()} == {
            backend.uuid(0): 7,  # A100: 7 compute slices
            backend.uuid(1): 4,  # A30: 4
            backend.uuid(2): 5,  # hami-core: deviceSplitCount
        }
        assert by_gpu[backend.uuid(1)] == ["0", "1", "2", "3"]


async def test_a_failed_layout_makes_its_devices_unhealthy(plugin_dir: Path) -> None:
    backend = FakeBackend(["A100-SXM4-80GB", "A30-24GB"], seed=NODE, mig_enabled=True)
    async with running(backend, plugin_dir) as node:
        await node.kubelet.devices(lambda d: len(d) == 11)
        # A spec for another GPU: the agent refuses it and the layout is Failed.
        await node.layouts.patch(f"{NODE}-gpu1", {"spec": {"gpuUUID": "GPU-not-this-one"}})
        devices = await node.kubelet.devices(
            lambda d: any(health == "Unhealthy" for _, health in d)
        )
        unhealthy = {d for d, health in devices if health == "Unhealthy"}
        assert unhealthy == {f"{backend.uuid(1)}::{n}" for n in range(4)}
        assert node.status(1)["phase"] == "Failed"
        # Put right again: healthy again, re-sent on the same stream.
        await node.layouts.patch(f"{NODE}-gpu1", {"spec": {"gpuUUID": backend.uuid(1)}})
        await node.kubelet.devices(lambda d: all(health == "Healthy" for _, health in d))


# -------------------------------------------------------------------------- allocate


@pytest.mark.parametrize("strategy", ["envvar", "cdi", "volume-mounts"])
async def test_the_seed_pod_gets_two_mig_instances_of_at_least_8000_mib(
    plugin_dir: Path, strategy: DeviceListStrategy
) -> None:
    backend = FakeBackend.from_spec("A100-SXM4-80GB:1", seed=NODE, mig_enabled=True)
    async with running(backend, plugin_dir, strategy=strategy) as node:
        instances = await node.plan(0, "1g.10gb@0", "1g.10gb@1")
        alloc = allocation({"ubuntu-container": [mig_device(backend, 0, i) for i in instances]})
        await node.pods.add(seed_pod(alloc))
        response = await node.kubelet.allocate(await node.device_ids(2))

        (container,) = response.container_responses
        if strategy == "envvar":
            uuids = container.envs["NVIDIA_VISIBLE_DEVICES"].split(",")
        elif strategy == "cdi":
            uuids = [d.name.removeprefix("nvidia.com/gpu=") for d in container.cdi_devices]
            assert "NVIDIA_VISIBLE_DEVICES" not in container.envs
        else:
            root = "/var/run/nvidia-container-devices"
            assert container.envs["NVIDIA_VISIBLE_DEVICES"] == root
            assert {m.host_path for m in container.mounts} == {"/dev/null"}
            uuids = [m.container_path.removeprefix(root + "/") for m in container.mounts]
        assert len(uuids) == 2
        assert set(uuids) == set(backend.mig_uuids(0).values())
        table = backend.table(0)
        for instance in instances:
            profile = table.get(instance["profile"])
            assert profile is not None
            assert profile.memory_mib >= 8000
        expected_cdi = [f"nvidia.com/gpu={u}" for u in uuids] if strategy == "cdi" else []
        assert [d.name for d in container.cdi_devices] == expected_cdi
        annotations = node.pods.annotations("default", "gpu-pod")
        assert annotations[ANNOTATION_BIND_PHASE] == "success"
        assert ANNOTATION_BIND_ERROR not in annotations
        assert "MigAllocated" in node.events.reasons("gpu-pod")

        # In use from the allocation on, before any process runs.
        def held(status: dict[str, Any]) -> bool:
            return all(
                i.get("inUse") and i.get("pod") == "default/gpu-pod"
                for i in status.get("instances") or []
            )

        status = await node.wait_layout(0, held)
        assert status["used"] == "2/2"
        assert backend.processes() == []


async def test_hami_core_allocate_returns_memory_and_core_limits(plugin_dir: Path) -> None:
    backend = FakeBackend.from_spec("A100-SXM4-40GB:2", seed=NODE)  # MIG off: hami-core
    async with running(backend, plugin_dir, split_count=4) as node:
        await node.kubelet.devices(lambda d: len(d) == 8)
        share = {
            "gpuUUID": backend.uuid(1),
            "gpuIndex": 1,
            "mode": "hami-core",
            "memoryMiB": 8000,
            "cores": 30,
        }
        await node.pods.add(pod("shared", {"main": 1}, alloc=allocation({"main": [share]})))
        response = await node.kubelet.allocate(await node.device_ids(1))
        assert dict(response.container_responses[0].envs) == {
            "NVIDIA_VISIBLE_DEVICES": backend.uuid(1),
            "CUDA_DEVICE_MEMORY_LIMIT_0": "8000m",
            "CUDA_DEVICE_SM_LIMIT": "30",
        }
        assert node.pods.annotations("default", "shared")[ANNOTATION_BIND_PHASE] == "success"


def hami_core_host(root: Path, *, installed: bool = True) -> HamiCoreHost:
    """HAMi-core's host directory under `root`, installed from a stand-in library."""
    host = HamiCoreHost(str(root / "vgpu"), lock_dir=str(root / "vgpulock"))
    if installed:
        image_lib = root / "image-libvgpu.so"
        image_lib.write_bytes(b"\x7fELF stand-in for HAMi-core")
        host.install(image_lib)
    return host


def hami_core_pod(name: str, backend: FakeBackend, uid: str) -> dict[str, Any]:
    share = {"gpuUUID": backend.uuid(1), "gpuIndex": 1, "mode": "hami-core", "memoryMiB": 8000}
    return pod(name, {"main": 1}, alloc=allocation({"main": [{**share, "cores": 30}]}), uid=uid)


async def test_hami_core_allocate_mounts_the_library_preload_and_cache_with_the_limits(
    plugin_dir: Path, tmp_path: Path
) -> None:
    backend = FakeBackend.from_spec("A100-SXM4-40GB:2", seed=NODE)  # MIG off: hami-core
    host = hami_core_host(tmp_path)
    async with running(backend, plugin_dir, split_count=4, hami_core=host) as node:
        await node.kubelet.devices(lambda d: len(d) == 8)
        await node.pods.add(hami_core_pod("shared", backend, uid="uid-1"))
        response = await node.kubelet.allocate(await node.device_ids(1))

    (container,) = response.container_responses
    vgpu, lock = tmp_path / "vgpu", tmp_path / "vgpulock"
    assert dict(container.envs) == {
        "NVIDIA_VISIBLE_DEVICES": backend.uuid(1),
        "CUDA_DEVICE_MEMORY_LIMIT_0": "8000m",
        "CUDA_DEVICE_SM_LIMIT": "30",
        "CUDA_DEVICE_MEMORY_SHARED_CACHE": "/usr/local/vgpu/uid-1_main.cache",
    }
    assert [(m.container_path, m.host_path, m.read_only) for m in container.mounts] == [
        ("/usr/local/vgpu", f"{vgpu}/containers/uid-1_main", False),
        ("/usr/local/vgpu/libvgpu.so", f"{vgpu}/libvgpu.so", True),
        ("/etc/ld.so.preload", f"{vgpu}/ld.so.preload", True),
        ("/tmp/vgpulock", str(lock), False),
    ]
    # What the mounts point at exists: the preload names the library where it is mounted.
    assert (vgpu / "ld.so.preload").read_text() == "/usr/local/vgpu/libvgpu.so\n"
    assert (vgpu / "libvgpu.so").read_bytes().startswith(b"\x7fELF")
    assert ((vgpu / "containers" / "uid-1_main").stat().st_mode & 0o777) == 0o777
    assert (lock.stat().st_mode & 0o777) == 0o777


async def test_a_mig_container_gets_no_hami_core_mounts(plugin_dir: Path, tmp_path: Path) -> None:
    backend = FakeBackend.from_spec("A100-SXM4-80GB:1", seed=NODE, mig_enabled=True)
    async with running(backend, plugin_dir, hami_core=hami_core_host(tmp_path)) as node:
        (instance,) = await node.plan(0, "3g.40gb@4")
        await node.pods.add(
            pod("mig", {"main": 1}, alloc=allocation({"main": [mig_device(backend, 0, instance)]}))
        )
        response = await node.kubelet.allocate(await node.device_ids(1))
    assert list(response.container_responses[0].mounts) == []
    assert "CUDA_DEVICE_MEMORY_SHARED_CACHE" not in response.container_responses[0].envs


async def test_without_hami_core_on_the_node_a_hami_core_container_is_refused(
    plugin_dir: Path, tmp_path: Path
) -> None:
    backend = FakeBackend.from_spec("A100-SXM4-40GB:2", seed=NODE)
    host = hami_core_host(tmp_path, installed=False)
    async with running(backend, plugin_dir, split_count=4, hami_core=host) as node:
        await node.kubelet.devices(lambda d: len(d) == 8)
        await node.pods.add(hami_core_pod("shared", backend, uid="uid-2"))
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await node.kubelet.allocate(await node.device_ids(1))
        annotations = node.pods.annotations("default", "shared")
    # Never a container that believes it is limited while nothing enforces the limit.
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "HAMi-core is not installed on this node" in (error.value.details() or "")
    assert annotations[ANNOTATION_BIND_PHASE] == "failed"


def test_the_cache_directories_of_gone_pods_are_pruned(tmp_path: Path) -> None:
    host = hami_core_host(tmp_path)
    host.prepare("live", "main")
    host.prepare("gone", "main")
    host.prune({"live"})
    assert [p.name for p in (tmp_path / "vgpu" / "containers").iterdir()] == ["live_main"]


async def test_containers_of_one_pod_are_answered_in_order(plugin_dir: Path) -> None:
    backend = FakeBackend.from_spec("A100-SXM4-80GB:1", seed=NODE, mig_enabled=True)
    async with running(backend, plugin_dir) as node:
        instances = await node.plan(0, "3g.40gb@4", "1g.10gb@0", "1g.10gb@1")
        by_start = {i["placement"]["start"]: i for i in instances}
        alloc = allocation(
            {
                "trainer": [mig_device(backend, 0, by_start[4])],
                "sidecar": [
                    mig_device(backend, 0, by_start[0]),
                    mig_device(backend, 0, by_start[1]),
                ],
            }
        )
        await node.pods.add(pod("two", {"trainer": 1, "sidecar": 2}, alloc=alloc))
        first = await node.kubelet.allocate(await node.device_ids(1))
        assert first.container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"] == by_start[4]["uuid"]
        assert node.pods.annotations("default", "two")[ANNOTATION_BIND_PHASE] == "allocating"
        second = await node.kubelet.allocate(await node.device_ids(2))
        assert second.container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"] == ",".join(
            [by_start[0]["uuid"], by_start[1]["uuid"]]
        )
        assert node.pods.annotations("default", "two")[ANNOTATION_BIND_PHASE] == "success"


async def test_the_oldest_waiting_pod_is_served_first(plugin_dir: Path) -> None:
    backend = FakeBackend.from_spec("A100-SXM4-80GB:1", seed=NODE, mig_enabled=True)
    async with running(backend, plugin_dir) as node:
        instances = await node.plan(0, "1g.10gb@0", "1g.10gb@1")
        old, new = (allocation({"main": [mig_device(backend, 0, i)]}) for i in instances)
        # Ordered by what the control plane writes (creation here), never by bind-time.
        newer = pod("newer", {"main": 1}, alloc=new, bind_time=1, created="2026-01-01T00:00:09Z")
        await node.pods.add(newer)
        await node.pods.add(pod("older", {"main": 1}, alloc=old, bind_time=2000))
        response = await node.kubelet.allocate(await node.device_ids(1))
        assert (
            response.container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"] == instances[0]["uuid"]
        )
        assert node.pods.annotations("default", "older")[ANNOTATION_BIND_PHASE] == "success"
        assert node.pods.annotations("default", "newer")[ANNOTATION_BIND_PHASE] == "allocating"


async def test_no_matching_pod_is_an_error_that_changes_nothing(plugin_dir: Path) -> None:
    backend = FakeBackend.from_spec("A100-SXM4-80GB:1", seed=NODE, mig_enabled=True)
    async with running(backend, plugin_dir) as node:
        instances = await node.plan(0, "1g.10gb@0")
        other = pod(
            "other", {"main": 1}, alloc=allocation({"main": [mig_device(backend, 0, instances[0])]})
        )
        await node.pods.add(other)
        before = copy.deepcopy(node.pods.objects)
        mutations = len(backend.mutating_calls)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await node.kubelet.allocate(await node.device_ids(2))
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
        message = error.value.details()
        assert "no pod on node n1" in message
        assert "waits for 2 nvidia.com/gpu" in message
        assert "default/other (container main asks 1)" in message
        assert node.pods.patches == []
        assert node.pods.objects == before
        assert node.events.reasons("other") == []
        assert len(backend.mutating_calls) == mutations


async def test_a_stale_mig_uuid_fails_that_pod_only(plugin_dir: Path) -> None:
    backend = FakeBackend.from_spec("A100-SXM4-80GB:1", seed=NODE, mig_enabled=True)
    async with running(backend, plugin_dir) as node:
        instances = await node.plan(0, "1g.10gb@0", "1g.10gb@1", "1g.10gb@2")
        stale = mig_device(backend, 0, instances[0]) | {
            "migUUID": "MIG-00000000-0000-5000-8000-000000000000"
        }
        alloc = allocation({"ubuntu-container": [stale, mig_device(backend, 0, instances[1])]})
        await node.pods.add(seed_pod(alloc))
        bystander = pod(
            "other", {"main": 1}, alloc=allocation({"main": [mig_device(backend, 0, instances[2])]})
        )
        await node.pods.add(bystander)
        mutations = len(backend.mutating_calls)

        with pytest.raises(grpc.aio.AioRpcError) as error:
            await node.kubelet.allocate(await node.device_ids(2))
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
        message = error.value.details()
        assert "default/gpu-pod" in message
        assert "MIG-00000000-0000-5000-8000-000000000000" in message
        assert "no longer exists" in message

        annotations = node.pods.annotations("default", "gpu-pod")
        assert annotations[ANNOTATION_BIND_PHASE] == "failed"
        assert "MIG-00000000-0000-5000-8000-000000000000" in annotations[ANNOTATION_BIND_ERROR]
        assert ("gpu-pod", "MigAllocateFailed") in [
            (n, r) for n, r, _, t in node.events.events if t == "Warning"
        ]
        assert node.pods.annotations("default", "other")[ANNOTATION_BIND_PHASE] == "allocating"
        assert [key for key, _ in node.pods.patches] == ["default/gpu-pod"]
        assert len(backend.mutating_calls) == mutations

        # The bystander is still served normally afterwards.
        response = await node.kubelet.allocate(await node.device_ids(1))
        assert (
            response.container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"] == instances[2]["uuid"]
        )


async def test_a_mig_uuid_held_by_another_pod_is_refused(plugin_dir: Path) -> None:
    backend = FakeBackend.from_spec("A100-SXM4-80GB:1", seed=NODE, mig_enabled=True)
    async with running(backend, plugin_dir) as node:
        (instance,) = await node.plan(0, "3g.40gb@4")
        same = allocation({"main": [mig_device(backend, 0, instance)]})
        await node.pods.add(pod("owner", {"main": 1}, alloc=same, phase="success"))
        await node.pods.add(pod("intruder", {"main": 1}, alloc=same))
        owner_before = copy.deepcopy(node.pods.objects["default/owner"])

        with pytest.raises(grpc.aio.AioRpcError) as error:
            await node.kubelet.allocate(await node.device_ids(1))
        assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        message = error.value.details()
        assert "default/intruder" in message
        assert instance["uuid"] in message
        assert "already allocated to pod default/owner" in message
        assert node.pods.annotations("default", "intruder")[ANNOTATION_BIND_PHASE] == "failed"
        assert node.pods.objects["default/owner"] == owner_before
        assert "MigAllocateFailed" in node.events.reasons("intruder")


async def test_a_gpu_that_cannot_be_read_is_an_error_not_a_crash(plugin_dir: Path) -> None:
    backend = FakeBackend.from_spec("A100-SXM4-80GB:1", seed=NODE, mig_enabled=True)
    async with running(backend, plugin_dir) as node:
        first, second = await node.plan(0, "1g.10gb@0", "1g.10gb@1")
        await node.pods.add(
            pod("p", {"main": 1}, alloc=allocation({"main": [mig_device(backend, 0, first)]}))
        )
        await node.wait_layout(0, lambda s: s.get("used") == "1/2")
        ids = await node.device_ids(1)
        # The GPU falls off the bus for a while: every read fails, the agent's too.
        backend.fail_call("list_gpu_instances", NvmlError.GPU_IS_LOST, times=1000)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await node.kubelet.allocate(ids)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "default/p" in error.value.details()
        assert "GPU_IS_LOST" in error.value.details()
        assert node.pods.annotations("default", "p")[ANNOTATION_BIND_PHASE] == "failed"
        # The plugin goes on serving once the GPU is back.
        backend.clear_faults()
        await node.pods.add(
            pod("q", {"main": 1}, alloc=allocation({"main": [mig_device(backend, 0, second)]}))
        )
        response = await node.kubelet.allocate(ids)
        assert response.container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"] == second["uuid"]


# ------------------------------------------------------------------ in-use accounting


async def test_an_allocated_instance_is_in_use_until_its_pod_ends(plugin_dir: Path) -> None:
    backend = FakeBackend.from_spec("H100-SXM5-80GB:1", seed=NODE, mig_enabled=True)
    async with running(backend, plugin_dir) as node:
        instances = await node.plan(0, "3g.40gb@0", "2g.20gb@4")
        await node.pods.add(
            pod(
                "train",
                {"main": 1},
                alloc=allocation({"main": [mig_device(backend, 0, instances[0])]}),
                phase="success",
            )
        )
        status = await node.wait_layout(0, lambda s: s.get("used") == "1/2")
        held = {i["placement"]["start"]: (i["inUse"], i.get("pod")) for i in status["instances"]}
        assert held == {0: (True, "default/train"), 4: (False, None)}

        # Held: a spec that drops it leaves it in place.
        await node.layouts.patch(f"{NODE}-gpu0", {"spec": {"instances": []}})
        await node.wait_layout(0, lambda s: s.get("observedGeneration") == 3)
        assert Placement(0, 4) in backend.mig_uuids(0)

        await node.pods.set_phase("default", "train", "Succeeded")
        status = await node.wait_layout(0, lambda s: s.get("used") == "-")
        assert backend.mig_uuids(0) == {}


# ---------------------------------------------------------------------- node capacity


async def test_the_node_advertises_gpu_memory_and_cores_until_the_agent_stops(
    plugin_dir: Path,
) -> None:
    backend = FakeBackend(["A100-SXM4-80GB", "A30-24GB"], seed=NODE, mig_enabled=True)
    total = sum(g.memory_mib for g in backend.list_gpus())
    expected = {
        "nvidia.com/gpumem": str(total),
        "nvidia.com/gpumem-percentage": "200",
        "nvidia.com/gpucores": "200",
    }
    async with running(backend, plugin_dir) as node:

        def advertised(status: dict[str, Any]) -> bool:
            return all(
                status[section].get(k) == v
                for section in ("capacity", "allocatable")
                for k, v in expected.items()
            )

        await node.nodes.wait_for(NODE, advertised)
        assert node.nodes.status[NODE]["capacity"]["cpu"] == "8"
        # A kubelet that lost its device checkpoint zeroes extended resources; after it
        # comes back and the plugin registers again, the agent restores them.
        node.nodes.status[NODE]["capacity"]["nvidia.com/gpumem"] = "0"
        await node.kubelet.restart()
        await node.kubelet.registrations(2)
        await node.nodes.wait_for(NODE, advertised)
    status = node.nodes.status[NODE]
    for section in ("capacity", "allocatable"):
        assert not any(k.startswith("nvidia.com/gpu") for k in status[section])
    assert status["capacity"]["cpu"] == "8"
